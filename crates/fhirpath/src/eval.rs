//! Evaluation of parsed FHIRPath expressions over FHIR JSON.

use crate::model::{Kind, MODEL};
use crate::parser::{BinOp, Expr, ExprKind, Lit};
use crate::quantity::{self, Quantity};
use crate::temporal::{self, TKind, Temporal};
use crate::{EvalError, Item};
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde_json::Value as JsonValue;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::str::FromStr;

pub(crate) static NULL: JsonValue = JsonValue::Null;

type R<T> = Result<T, EvalError>;

fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(EvalError(msg.into()))
}

/// (name, min args, max args)
const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("empty", 0, 0),
    ("exists", 0, 1),
    ("all", 1, 1),
    ("allTrue", 0, 0),
    ("anyTrue", 0, 0),
    ("allFalse", 0, 0),
    ("anyFalse", 0, 0),
    ("subsetOf", 1, 1),
    ("supersetOf", 1, 1),
    ("count", 0, 0),
    ("distinct", 0, 0),
    ("isDistinct", 0, 0),
    ("where", 1, 1),
    ("select", 1, 1),
    ("repeat", 1, 1),
    ("repeatAll", 1, 1),
    ("ofType", 1, 1),
    ("is", 1, 1),
    ("as", 1, 1),
    ("single", 0, 0),
    ("first", 0, 0),
    ("last", 0, 0),
    ("tail", 0, 0),
    ("skip", 1, 1),
    ("take", 1, 1),
    ("intersect", 1, 1),
    ("exclude", 1, 1),
    ("union", 1, 1),
    ("combine", 1, 1),
    ("iif", 2, 3),
    ("toBoolean", 0, 0),
    ("convertsToBoolean", 0, 0),
    ("toInteger", 0, 0),
    ("convertsToInteger", 0, 0),
    ("toLong", 0, 0),
    ("convertsToLong", 0, 0),
    ("toDate", 0, 0),
    ("convertsToDate", 0, 0),
    ("toDateTime", 0, 0),
    ("convertsToDateTime", 0, 0),
    ("toDecimal", 0, 0),
    ("convertsToDecimal", 0, 0),
    ("toQuantity", 0, 1),
    ("convertsToQuantity", 0, 1),
    ("toString", 0, 0),
    ("convertsToString", 0, 0),
    ("toTime", 0, 0),
    ("convertsToTime", 0, 0),
    ("indexOf", 1, 1),
    ("lastIndexOf", 1, 1),
    ("substring", 1, 2),
    ("startsWith", 1, 1),
    ("endsWith", 1, 1),
    ("contains", 1, 1),
    ("upper", 0, 0),
    ("lower", 0, 0),
    ("replace", 2, 2),
    ("matches", 1, 2),
    ("matchesFull", 1, 2),
    ("replaceMatches", 2, 3),
    ("length", 0, 0),
    ("toChars", 0, 0),
    ("trim", 0, 0),
    ("split", 1, 1),
    ("join", 0, 1),
    ("encode", 1, 1),
    ("decode", 1, 1),
    ("escape", 1, 1),
    ("unescape", 1, 1),
    ("abs", 0, 0),
    ("ceiling", 0, 0),
    ("exp", 0, 0),
    ("floor", 0, 0),
    ("ln", 0, 0),
    ("log", 1, 1),
    ("power", 1, 1),
    ("round", 0, 1),
    ("sqrt", 0, 0),
    ("truncate", 0, 0),
    ("children", 0, 0),
    ("descendants", 0, 0),
    ("trace", 1, 2),
    ("now", 0, 0),
    ("timeOfDay", 0, 0),
    ("today", 0, 0),
    ("not", 0, 0),
    ("aggregate", 1, 2),
    ("sort", 0, 10),
    ("lowBoundary", 0, 1),
    ("highBoundary", 0, 1),
    ("precision", 0, 0),
    ("comparable", 1, 1),
    ("type", 0, 0),
    ("defineVariable", 1, 2),
    ("extension", 1, 1),
    ("hasExtension", 1, 1),
    ("resolve", 0, 0),
    ("hasValue", 0, 0),
    ("getValue", 0, 0),
    ("htmlChecks", 0, 0),
    ("htmlChecks2", 0, 0),
    ("memberOf", 1, 1),
    ("conformsTo", 1, 1),
    ("subsumes", 1, 1),
    ("subsumedBy", 1, 1),
    ("elementDefinition", 0, 0),
    ("slice", 2, 2),
    ("checkModifiers", 1, 1),
    ("yearOf", 0, 0),
    ("monthOf", 0, 0),
    ("dayOf", 0, 0),
    ("hourOf", 0, 0),
    ("minuteOf", 0, 0),
    ("secondOf", 0, 0),
    ("millisecondOf", 0, 0),
];

/// Checks a function name and arity at parse time.
pub(crate) fn check_function(name: &str, n: usize) -> Result<(), String> {
    match FUNCTIONS.iter().find(|(f, _, _)| *f == name) {
        None => Err(format!("unknown function '{name}'")),
        Some((_, min, max)) if n < *min || n > *max => Err(format!(
            "function '{name}' takes {min}..{max} arguments, got {n}"
        )),
        Some(_) => Ok(()),
    }
}

/// Per-evaluation environment.
pub(crate) struct Env<'a, 'v> {
    pub root: Item<'a>,
    pub vars: Option<&'v HashMap<String, Vec<Item<'a>>>>,
    pub defined: RefCell<Vec<(String, Vec<Item<'a>>)>>,
    pub steps: std::cell::Cell<u64>,
    /// `resolve()`'s lookups, built at its first use: the root's contained resources by id, and a Bundle's
    /// entries by `fullUrl` and by each of its suffixes after a `/` (a reference `Type/id` matches
    /// `http://…/Type/id`). Without them each reference scanned the whole list: a resource of 10⁵ references
    /// and 10⁵ contained resources took 10¹⁰ comparisons.
    pub lookups: std::cell::OnceCell<Lookups<'a>>,
}

#[derive(Default)]
pub(crate) struct Lookups<'a> {
    contained: HashMap<&'a str, Vec<&'a JsonValue>>,
    entries: HashMap<&'a str, &'a JsonValue>,
}

impl<'a> Lookups<'a> {
    fn of(root: &Item<'a>) -> Self {
        let mut l = Lookups::default();
        let Item::Node {
            json: JsonValue::Object(root),
            ..
        } = root
        else {
            return l;
        };
        if let Some(JsonValue::Array(contained)) = root.get("contained") {
            for c in contained {
                if let Some(id) = c.get("id").and_then(JsonValue::as_str) {
                    l.contained.entry(id).or_default().push(c);
                }
            }
        }
        if root.get("resourceType").and_then(JsonValue::as_str) == Some("Bundle")
            && let Some(JsonValue::Array(entries)) = root.get("entry")
        {
            for e in entries {
                let full = e.get("fullUrl").and_then(JsonValue::as_str).unwrap_or("");
                let Some(r) = e.get("resource") else { continue };
                if full.is_empty() {
                    continue;
                }
                // The first entry wins, as a scan in order would find it.
                l.entries.entry(full).or_insert(r);
                for (i, _) in full.match_indices('/') {
                    l.entries.entry(&full[i + 1..]).or_insert(r);
                }
            }
        }
        l
    }
}

/// Lambda iteration frame (`$this`, `$index`, `$total`).
#[derive(Clone, Copy)]
pub(crate) struct Frame<'f, 'a> {
    pub index: Option<usize>,
    pub total: Option<&'f [Item<'a>]>,
}

const MAX_STEPS: u64 = 5_000_000;
pub(crate) const STACK_RED_ZONE: usize = 128 * 1024;
pub(crate) const STACK_GROW: usize = 2 * 1024 * 1024;

/// A borrowed system-level view of an item.
#[derive(Debug, Clone)]
pub(crate) enum Prim<'b> {
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    Str(&'b str),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Qty(Quantity),
    /// A complex node (object) or something without a primitive value.
    Complex,
}

pub(crate) fn json_decimal(n: &serde_json::Number) -> Option<Decimal> {
    let s = n.to_string();
    Decimal::from_str(&s)
        .ok()
        .or_else(|| Decimal::from_scientific(&s).ok())
}

fn is_quantity_type(t: &str) -> bool {
    matches!(
        t,
        "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity" | "MoneyQuantity"
    )
}

fn node_quantity(obj: &serde_json::Map<String, JsonValue>) -> Option<Quantity> {
    let value = match obj.get("value")? {
        JsonValue::Number(n) => json_decimal(n)?,
        _ => return None,
    };
    let ucum = obj.get("system").and_then(JsonValue::as_str) == Some("http://unitsofmeasure.org");
    let unit = if ucum {
        obj.get("code").and_then(JsonValue::as_str)
    } else {
        None
    }
    .or_else(|| obj.get("unit").and_then(JsonValue::as_str))
    .or_else(|| obj.get("code").and_then(JsonValue::as_str))
    .unwrap_or("1");
    // calendar keywords written as UCUM codes in data stay UCUM
    Some(Quantity {
        value,
        unit: unit.to_string(),
    })
}

pub(crate) fn prim<'b>(item: &'b Item<'_>) -> Prim<'b> {
    match item {
        Item::Boolean(b) => Prim::Bool(*b),
        Item::Integer(i) => Prim::Int(*i),
        Item::Decimal(d) => Prim::Dec(*d),
        Item::String(s) => Prim::Str(s),
        Item::Date(t) => Prim::Date(*t),
        Item::DateTime(t) => Prim::DateTime(*t),
        Item::Time(t) => Prim::Time(*t),
        Item::Quantity(q) => Prim::Qty(q.clone()),
        Item::Node {
            json, fhir_type, ..
        } => {
            let sys = fhir_type.and_then(|t| MODEL.system_type(t));
            match (json, sys) {
                (JsonValue::Object(o), _) => {
                    if fhir_type.is_some_and(is_quantity_type) {
                        node_quantity(o).map(Prim::Qty).unwrap_or(Prim::Complex)
                    } else {
                        Prim::Complex
                    }
                }
                (JsonValue::String(s), Some("Date")) => Temporal::parse_fhir(s, TKind::Date)
                    .map(Prim::Date)
                    .unwrap_or(Prim::Str(s)),
                (JsonValue::String(s), Some("DateTime")) => {
                    Temporal::parse_fhir(s, TKind::DateTime)
                        .map(Prim::DateTime)
                        .unwrap_or(Prim::Str(s))
                }
                (JsonValue::String(s), Some("Time")) => Temporal::parse_fhir(s, TKind::Time)
                    .map(Prim::Time)
                    .unwrap_or(Prim::Str(s)),
                (JsonValue::String(s), _) => Prim::Str(s),
                (JsonValue::Bool(b), _) => Prim::Bool(*b),
                (JsonValue::Number(n), sys) => {
                    if sys != Some("Decimal")
                        && let Ok(i) = n.to_string().parse::<i64>()
                    {
                        return Prim::Int(i);
                    }
                    json_decimal(n).map(Prim::Dec).unwrap_or(Prim::Complex)
                }
                _ => Prim::Complex,
            }
        }
        Item::Resolved { .. } | Item::TypeInfo { .. } => Prim::Complex,
    }
}

fn prim_to_item<'a>(p: Prim<'_>) -> Option<Item<'a>> {
    Some(match p {
        Prim::Bool(b) => Item::Boolean(b),
        Prim::Int(i) => Item::Integer(i),
        Prim::Dec(d) => Item::Decimal(d),
        Prim::Str(s) => Item::String(s.to_string()),
        Prim::Date(t) => Item::Date(t),
        Prim::DateTime(t) => Item::DateTime(t),
        Prim::Time(t) => Item::Time(t),
        Prim::Qty(q) => Item::Quantity(q),
        Prim::Complex => return None,
    })
}

fn cap_eq(key_rest: &str, ty: &str) -> bool {
    let mut a = key_rest.chars();
    let mut b = ty.chars();
    match (a.next(), b.next()) {
        (Some(x), Some(y)) if x == y.to_ascii_uppercase() => a.as_str() == b.as_str(),
        _ => false,
    }
}

fn node_type_of(json: &JsonValue, declared: Option<&'static str>) -> Option<&'static str> {
    match declared {
        Some(t) if !matches!(t, "Resource" | "DomainResource") => Some(t),
        _ => match json {
            JsonValue::Object(o) => o
                .get("resourceType")
                .and_then(JsonValue::as_str)
                .and_then(|rt| MODEL.intern(rt))
                .or(declared),
            _ => declared,
        },
    }
}

fn push_values<'a>(
    value: Option<&'a JsonValue>,
    ext: Option<&'a JsonValue>,
    ty: Option<&'static str>,
    out: &mut Vec<Item<'a>>,
) {
    let ext_at = |i: usize| -> Option<&'a JsonValue> {
        match ext {
            Some(JsonValue::Array(a)) => a.get(i).filter(|e| !e.is_null()),
            Some(e @ JsonValue::Object(_)) if i == 0 => Some(e),
            _ => None,
        }
    };
    match value {
        Some(JsonValue::Array(arr)) => {
            for (i, v) in arr.iter().enumerate() {
                let e = ext_at(i);
                if v.is_null() && e.is_none() {
                    continue;
                }
                out.push(Item::Node {
                    json: v,
                    fhir_type: node_type_of(v, ty),
                    ext: e,
                });
            }
        }
        Some(JsonValue::Null) | None => match ext {
            Some(JsonValue::Array(a)) => {
                for e in a.iter().filter(|e| !e.is_null()) {
                    out.push(Item::Node {
                        json: &NULL,
                        fhir_type: ty,
                        ext: Some(e),
                    });
                }
            }
            Some(e @ JsonValue::Object(_)) => out.push(Item::Node {
                json: &NULL,
                fhir_type: ty,
                ext: Some(e),
            }),
            _ => {}
        },
        Some(v) => out.push(Item::Node {
            json: v,
            fhir_type: node_type_of(v, ty),
            ext: ext_at(0),
        }),
    }
}

/// Navigates to the children called `name`. Returns whether `name` is a valid element for the
/// item's type (always true for untyped items), so callers can report unknown elements.
pub(crate) fn children_named<'a>(item: &Item<'a>, name: &str, out: &mut Vec<Item<'a>>) -> R<bool> {
    let (json, fhir_type, ext) = match item {
        Item::Node {
            json,
            fhir_type,
            ext,
        } => (*json, *fhir_type, *ext),
        Item::TypeInfo { namespace, name: n } => {
            match name {
                "namespace" => out.push(Item::String(namespace.to_string())),
                "name" => out.push(Item::String(n.clone())),
                _ => {}
            }
            return Ok(true);
        }
        _ => return Ok(true),
    };
    let (obj, ty) = match json {
        JsonValue::Object(o) => (o, fhir_type),
        _ => {
            let known = fhir_type.is_none() || matches!(name, "id" | "extension");
            match ext {
                // primitive: id/extension live in the `_field` object
                Some(JsonValue::Object(o)) if known => (o, Some("Element")),
                _ => return Ok(known),
            }
        }
    };
    if let Some(t) = ty
        && let Some(info) = MODEL.get(t)
    {
        if let Some(el) = MODEL.element(t, name) {
            if el.choice {
                for (k, v) in obj.iter() {
                    if let Some(rest) = k.strip_prefix(name)
                        && let Some(ct) = el.types.iter().find(|ct| cap_eq(rest, ct))
                    {
                        let e = find_ext(obj, k);
                        push_values(Some(v), e, Some(ct), out);
                    }
                }
                return Ok(true);
            }
            let (v, e) = find_pair(obj, name);
            let ety = el.types.first().copied();
            push_values(v, e, ety, out);
            return Ok(true);
        }
        if info.kind != Kind::Primitive {
            // not an element of a known type (e.g. `valueQuantity` for `value[x]`): the caller
            // reports it when no item of the collection knows it
            return Ok(false);
        }
    }
    let (v, e) = find_pair(obj, name);
    push_values(v, e, None, out);
    Ok(true)
}

fn unknown_element<'a>(name: &str, input: &[Item<'a>]) -> EvalError {
    let ty = input.iter().find_map(Item::fhir_type).unwrap_or("?");
    EvalError(format!("'{name}' is not an element of {ty}"))
}

fn find_pair<'a>(
    obj: &'a serde_json::Map<String, JsonValue>,
    name: &str,
) -> (Option<&'a JsonValue>, Option<&'a JsonValue>) {
    let v = obj.get(name);
    let e = find_ext(obj, name);
    (v, e)
}

fn find_ext<'a>(obj: &'a serde_json::Map<String, JsonValue>, name: &str) -> Option<&'a JsonValue> {
    // cheap scan: keys starting with '_' are rare
    obj.iter()
        .find(|(k, _)| k.len() == name.len() + 1 && k.starts_with('_') && &k[1..] == name)
        .map(|(_, v)| v)
}

/// All children of a node (for children()/descendants()).
fn all_children<'a>(item: &Item<'a>, out: &mut Vec<Item<'a>>) {
    let Item::Node {
        json,
        fhir_type,
        ext,
    } = item
    else {
        return;
    };
    let obj = match json {
        JsonValue::Object(o) => o,
        _ => match ext {
            Some(JsonValue::Object(o)) => o,
            _ => return,
        },
    };
    let ty = if json.is_object() {
        *fhir_type
    } else {
        Some("Element")
    };
    for (k, v) in obj.iter() {
        if k == "resourceType" {
            continue;
        }
        if let Some(base) = k.strip_prefix('_') {
            if !obj.contains_key(base) {
                push_values(None, Some(v), elem_type(ty, base), out);
            }
            continue;
        }
        let e = find_ext(obj, k);
        push_values(Some(v), e, elem_type(ty, k), out);
    }
}

fn elem_type(ty: Option<&'static str>, key: &str) -> Option<&'static str> {
    let t = ty?;
    if let Some(el) = MODEL.element(t, key) {
        return if el.choice {
            None
        } else {
            el.types.first().copied()
        };
    }
    // choice key like valueQuantity
    let info = MODEL.get(t)?;
    let _ = info;
    let mut cur = Some(t);
    while let Some(c) = cur {
        let i = MODEL.get(c)?;
        for el in i.elements.iter().filter(|e| e.choice) {
            if let Some(rest) = key.strip_prefix(el.name)
                && let Some(ct) = el.types.iter().find(|ct| cap_eq(rest, ct))
            {
                return Some(ct);
            }
        }
        cur = i.base;
    }
    None
}

/// System type name of an item: (namespace, name).
pub(crate) fn type_of(item: &Item<'_>) -> (&'static str, String) {
    match item {
        Item::Boolean(_) => ("System", "Boolean".into()),
        Item::Integer(_) => ("System", "Integer".into()),
        Item::Decimal(_) => ("System", "Decimal".into()),
        Item::String(_) => ("System", "String".into()),
        Item::Date(_) => ("System", "Date".into()),
        Item::DateTime(_) => ("System", "DateTime".into()),
        Item::Time(_) => ("System", "Time".into()),
        Item::Quantity(_) => ("System", "Quantity".into()),
        Item::TypeInfo { .. } => ("System", "TypeInfo".into()),
        Item::Resolved { resource_type, .. } => ("FHIR", resource_type.to_string()),
        Item::Node {
            json, fhir_type, ..
        } => match fhir_type {
            Some(t) => ("FHIR", MODEL.public_name(t).to_string()),
            None => match json {
                JsonValue::Bool(_) => ("System", "Boolean".into()),
                JsonValue::String(_) => ("System", "String".into()),
                JsonValue::Number(n) => {
                    if n.to_string().parse::<i64>().is_ok() {
                        ("System", "Integer".into())
                    } else {
                        ("System", "Decimal".into())
                    }
                }
                _ => ("FHIR", "Element".into()),
            },
        },
    }
}

const SYSTEM_TYPES: [&str; 10] = [
    "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity", "Long",
    "TypeInfo",
];

/// `item is type_name` (`exact`: for as()/ofType(), FHIR primitive types do not match their
/// specializations, e.g. a `code` is not returned by `ofType(string)`).
pub(crate) fn is_type(item: &Item<'_>, type_name: &str) -> R<bool> {
    is_type_x(item, type_name, false)
}

pub(crate) fn is_type_x(item: &Item<'_>, type_name: &str, exact: bool) -> R<bool> {
    let (ns, name) = match type_name.split_once('.') {
        Some((ns @ ("System" | "FHIR"), n)) => (Some(ns), n),
        _ => (None, type_name),
    };
    let (ins, iname) = type_of(item);
    if ins == "System" {
        if ns == Some("FHIR") {
            return Ok(false);
        }
        if !SYSTEM_TYPES.contains(&name) && MODEL.get(name).is_none() {
            return fail(format!("unknown type '{type_name}'"));
        }
        return Ok(iname == name);
    }
    if ns == Some("System") {
        return Ok(false);
    }
    if MODEL.get(name).is_none() {
        if SYSTEM_TYPES.contains(&name) {
            return Ok(false);
        }
        return fail(format!("unknown type '{type_name}'"));
    }
    let actual = match item {
        Item::Node {
            fhir_type: Some(t), ..
        } => *t,
        Item::Resolved { resource_type, .. } => resource_type,
        _ => return Ok(false),
    };
    if exact && MODEL.system_type(name).is_some() {
        return Ok(actual == name);
    }
    Ok(MODEL.is_a(actual, name))
}

fn eq_dec(a: Decimal, b: Decimal) -> bool {
    a == b
}

/// `=` on two single items: None = unknown (empty result).
pub(crate) fn equals(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    if let (Item::Node { json: ja, .. }, Item::Node { json: jb, .. }) = (a, b)
        && (ja.is_object() || jb.is_object())
    {
        if let (Prim::Qty(x), Prim::Qty(y)) = (prim(a), prim(b)) {
            return x.compare(&y).map(|o| o == Ordering::Equal);
        }
        return Some(json_eq(ja, jb));
    }
    let pa = prim(a);
    let pb = prim(b);
    prim_equals(&pa, &pb)
}

fn json_eq(a: &JsonValue, b: &JsonValue) -> bool {
    match (a, b) {
        (JsonValue::Number(x), JsonValue::Number(y)) => match (json_decimal(x), json_decimal(y)) {
            (Some(p), Some(q)) => p == q,
            _ => x == y,
        },
        (JsonValue::Object(x), JsonValue::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        (JsonValue::Array(x), JsonValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_eq(v, w))
        }
        _ => a == b,
    }
}

fn str_as_temporal(s: &str, like: &Temporal) -> Option<Temporal> {
    match like.kind {
        TKind::Time => Temporal::parse_fhir(s, TKind::Time),
        _ => Temporal::parse_fhir(s, TKind::DateTime)
            .map(|mut t| {
                if t.precision <= temporal::DAY {
                    t.kind = TKind::Date;
                }
                t
            })
            .or_else(|| Temporal::parse_fhir(s, TKind::Date)),
    }
}

fn prim_equals(pa: &Prim<'_>, pb: &Prim<'_>) -> Option<bool> {
    use Prim::*;
    match (pa, pb) {
        (Bool(x), Bool(y)) => Some(x == y),
        (Int(x), Int(y)) => Some(x == y),
        (Int(x), Dec(y)) | (Dec(y), Int(x)) => Some(eq_dec(Decimal::from(*x), *y)),
        (Dec(x), Dec(y)) => Some(eq_dec(*x, *y)),
        (Str(x), Str(y)) => Some(x == y),
        (Date(x) | DateTime(x) | Time(x), Date(y) | DateTime(y) | Time(y)) => {
            if (x.kind == TKind::Time) != (y.kind == TKind::Time) {
                return Some(false);
            }
            x.compare(y).map(|o| o == Ordering::Equal)
        }
        (Str(s), Date(t) | DateTime(t) | Time(t)) | (Date(t) | DateTime(t) | Time(t), Str(s)) => {
            match str_as_temporal(s, t) {
                Some(p) => p.compare(t).map(|o| o == Ordering::Equal),
                None => Some(false),
            }
        }
        (Qty(x), Qty(y)) => x.compare(y).map(|o| o == Ordering::Equal),
        (Complex, _) | (_, Complex) => Some(false),
        _ => Some(false),
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `~` on two single items.
pub(crate) fn equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    if let (Item::Node { json: ja, .. }, Item::Node { json: jb, .. }) = (a, b)
        && (ja.is_object() || jb.is_object())
    {
        if let (Prim::Qty(x), Prim::Qty(y)) = (prim(a), prim(b)) {
            return x.compare(&y) == Some(Ordering::Equal);
        }
        return json_eq(ja, jb);
    }
    use Prim::*;
    match (prim(a), prim(b)) {
        (Str(x), Str(y)) => normalize_ws(x) == normalize_ws(y),
        (Int(x), Dec(y)) | (Dec(y), Int(x)) => dec_equiv(Decimal::from(x), y),
        (Dec(x), Dec(y)) => dec_equiv(x, y),
        (Date(x) | DateTime(x) | Time(x), Date(y) | DateTime(y) | Time(y)) => {
            x.compare(&y) == Some(Ordering::Equal)
        }
        (Qty(x), Qty(y)) => x.equivalent(&y),
        (pa, pb) => prim_equals(&pa, &pb).unwrap_or(false),
    }
}

fn dec_equiv(a: Decimal, b: Decimal) -> bool {
    let s = a.scale().min(b.scale());
    a.round_dp(s) == b.round_dp(s)
}

/// Ordering comparison; Ok(None) = empty result.
fn compare(a: &Item<'_>, b: &Item<'_>) -> R<Option<Ordering>> {
    use Prim::*;
    let (pa, pb) = (prim(a), prim(b));
    Ok(match (&pa, &pb) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Int(x), Dec(y)) => Some(Decimal::from(*x).cmp(y)),
        (Dec(x), Int(y)) => Some(x.cmp(&Decimal::from(*y))),
        (Dec(x), Dec(y)) => Some(x.cmp(y)),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        (Date(x) | DateTime(x), Date(y) | DateTime(y)) => x.compare(y),
        (Time(x), Time(y)) => x.compare(y),
        (Str(s), Date(t) | DateTime(t) | Time(t)) => match str_as_temporal(s, t) {
            Some(p) => p.compare(t),
            None => return fail("cannot compare string with date"),
        },
        (Date(t) | DateTime(t) | Time(t), Str(s)) => match str_as_temporal(s, t) {
            Some(p) => t.compare(&p),
            None => return fail("cannot compare date with string"),
        },
        (Qty(x), Qty(y)) => x.compare(y),
        _ => {
            return fail(format!(
                "cannot compare {} with {}",
                type_of(a).1,
                type_of(b).1
            ));
        }
    })
}

fn bool_item<'a>(b: bool) -> Vec<Item<'a>> {
    vec![Item::Boolean(b)]
}

fn opt_bool<'a>(b: Option<bool>) -> Vec<Item<'a>> {
    b.map(bool_item).unwrap_or_default()
}

/// Singleton evaluation to boolean.
fn to_bool(items: &[Item<'_>]) -> R<Option<bool>> {
    match items {
        [] => Ok(None),
        [one] => match prim(one) {
            Prim::Bool(b) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
        _ => fail("expected a single boolean, got a collection"),
    }
}

fn val_string(v: &[Item<'_>]) -> R<Option<String>> {
    match single(v)? {
        None => Ok(None),
        Some(i) => match prim(i) {
            Prim::Str(s) => Ok(Some(s.to_string())),
            _ => fail("expected a string argument"),
        },
    }
}

fn val_int(v: &[Item<'_>]) -> R<Option<i64>> {
    match single(v)? {
        None => Ok(None),
        Some(i) => match prim(i) {
            Prim::Int(n) => Ok(Some(n)),
            _ => fail("expected an integer argument"),
        },
    }
}

fn single<'x, 'a>(items: &'x [Item<'a>]) -> R<Option<&'x Item<'a>>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => fail(format!("expected a single item, got {}", items.len())),
    }
}

fn distinct_push<'a>(out: &mut Vec<Item<'a>>, item: Item<'a>) {
    if !out.iter().any(|o| equals(o, &item) == Some(true)) {
        out.push(item);
    }
}

fn dec_to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

fn f64_item<'a>(f: f64) -> Vec<Item<'a>> {
    if !f.is_finite() {
        return vec![];
    }
    match Decimal::from_f64(f) {
        Some(d) => vec![Item::Decimal(d)],
        None => vec![],
    }
}

fn as_string(item: &Item<'_>) -> Option<String> {
    match prim(item) {
        Prim::Str(s) => Some(s.to_string()),
        Prim::Int(i) => Some(i.to_string()),
        Prim::Dec(d) => Some(d.to_string()),
        Prim::Bool(b) => Some(b.to_string()),
        Prim::Date(t) | Prim::DateTime(t) | Prim::Time(t) => Some(t.to_text()),
        Prim::Qty(q) => Some(q.to_text()),
        Prim::Complex => None,
    }
}

fn parse_quantity_string(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let (num, rest) = match s.find(' ') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    if num.is_empty()
        || !num
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    let value = Decimal::from_str(num).ok()?;
    if rest.is_empty() {
        return Some(Quantity::new(value, "1"));
    }
    if let Some(u) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Some(Quantity::new(value, u));
    }
    if quantity::is_calendar_unit(rest) {
        return Some(Quantity::new(value, rest));
    }
    None
}

fn to_integer(item: &Item<'_>) -> Option<i64> {
    match prim(item) {
        Prim::Int(i) => Some(i),
        Prim::Bool(b) => Some(i64::from(b)),
        Prim::Str(s) => {
            let t = s.strip_prefix('+').unwrap_or(s);
            if t.is_empty()
                || !t
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit())
            {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

fn to_decimal(item: &Item<'_>) -> Option<Decimal> {
    match prim(item) {
        Prim::Int(i) => Some(Decimal::from(i)),
        Prim::Dec(d) => Some(d),
        Prim::Bool(b) => Some(if b { Decimal::ONE } else { Decimal::ZERO }),
        Prim::Str(s) => {
            let t = s.strip_prefix(['+', '-']).unwrap_or(s);
            let ok = !t.is_empty()
                && t.chars().all(|c| c.is_ascii_digit() || c == '.')
                && t.matches('.').count() <= 1
                && !t.starts_with('.')
                && !t.ends_with('.');
            if ok {
                Decimal::from_str(s.strip_prefix('+').unwrap_or(s)).ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

fn to_boolean(item: &Item<'_>) -> Option<bool> {
    match prim(item) {
        Prim::Bool(b) => Some(b),
        Prim::Int(1) => Some(true),
        Prim::Int(0) => Some(false),
        Prim::Dec(d) if d == Decimal::ONE => Some(true),
        Prim::Dec(d) if d.is_zero() => Some(false),
        Prim::Str(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_quantity(item: &Item<'_>) -> Option<Quantity> {
    match prim(item) {
        Prim::Int(i) => Some(Quantity::new(Decimal::from(i), "1")),
        Prim::Dec(d) => Some(Quantity::new(d, "1")),
        Prim::Qty(q) => Some(q),
        Prim::Str(s) => parse_quantity_string(s),
        Prim::Bool(b) => Some(Quantity::new(
            if b { Decimal::ONE } else { Decimal::ZERO },
            "1",
        )),
        _ => None,
    }
}

fn to_temporal(item: &Item<'_>, kind: TKind) -> Option<Temporal> {
    match (prim(item), kind) {
        (Prim::Date(t), TKind::Date) => Some(t),
        (Prim::DateTime(t), TKind::Date) => Some(Temporal {
            kind: TKind::Date,
            tz: None,
            ..t.with_precision(t.precision.min(temporal::DAY))
        }),
        (Prim::Date(t), TKind::DateTime) => Some(Temporal {
            kind: TKind::DateTime,
            ..t
        }),
        (Prim::DateTime(t), TKind::DateTime) => Some(t),
        (Prim::Time(t), TKind::Time) => Some(t),
        (Prim::Str(s), TKind::Date) => Temporal::parse_fhir(s, TKind::Date).or_else(|| {
            Temporal::parse_fhir(s, TKind::DateTime).map(|t| Temporal {
                kind: TKind::Date,
                tz: None,
                ..t.with_precision(t.precision.min(temporal::DAY))
            })
        }),
        (Prim::Str(s), TKind::DateTime) => Temporal::parse_fhir(s, TKind::DateTime),
        (Prim::Str(s), TKind::Time) => Temporal::parse_fhir(s, TKind::Time),
        _ => None,
    }
}

fn decimal_boundary(
    d: Decimal,
    digits: Option<i64>,
    high: bool,
    int_input: bool,
) -> Option<Decimal> {
    let p = digits.unwrap_or(8);
    if !(0..=28).contains(&p) {
        return None;
    }
    let p = p as u32;
    let scale = d.scale();
    let _ = int_input;
    if scale >= 28 {
        return Some(d);
    }
    // half unit of the last significant digit
    let half = Decimal::new(5, scale + 1);
    let v = if high {
        d.checked_add(half)?
    } else {
        d.checked_sub(half)?
    };
    if v.trunc_with_scale(p).is_zero() {
        let mut z = Decimal::new(0, p);
        z.set_sign_negative(v.is_sign_negative());
        return Some(z);
    }
    let v = if high == (v.is_sign_negative()) {
        // toward zero
        v.trunc_with_scale(p)
    } else {
        // away from zero
        let t = v.trunc_with_scale(p);
        if t == v {
            t
        } else if v.is_sign_negative() {
            t.checked_sub(Decimal::new(1, p))?
        } else {
            t.checked_add(Decimal::new(1, p))?
        }
    };
    let mut v = v;
    v.rescale(p);
    Some(v)
}

fn temporal_boundary(t: &Temporal, digits: Option<i64>, high: bool) -> Option<Temporal> {
    let target = match (t.kind, digits) {
        (TKind::Time, None) => temporal::MILLIS,
        (_, None) => {
            if t.kind == TKind::Date {
                temporal::DAY
            } else {
                temporal::MILLIS
            }
        }
        (TKind::Time, Some(d)) => match d {
            2 => temporal::HOUR,
            4 => temporal::MINUTE,
            6 => temporal::SECOND,
            9 => temporal::MILLIS,
            _ => return None,
        },
        (_, Some(d)) => match d {
            4 => temporal::YEAR,
            6 => temporal::MONTH,
            8 => temporal::DAY,
            10 => temporal::HOUR,
            12 => temporal::MINUTE,
            14 => temporal::SECOND,
            17 => temporal::MILLIS,
            _ => return None,
        },
    };
    let mut r = *t;
    if target <= t.precision {
        return Some(t.with_precision(target));
    }
    if high {
        if t.precision < temporal::MONTH {
            r.month = 12;
        }
        if t.precision < temporal::DAY {
            r.day = temporal::days_in_month(r.year, r.month);
        }
        if t.precision < temporal::HOUR {
            r.hour = 23;
        }
        if t.precision < temporal::MINUTE {
            r.minute = 59;
        }
        if t.precision < temporal::SECOND {
            r.second = 59;
        }
        if t.precision < temporal::MILLIS {
            r.millis = 999;
        }
    }
    if r.kind == TKind::DateTime && r.tz.is_none() && target >= temporal::HOUR {
        r.tz = Some(if high { -12 * 60 } else { 14 * 60 });
    }
    r.precision = target;
    Some(r)
}

fn base64_encode(data: &[u8], url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

impl<'a> Env<'a, '_> {
    fn tick(&self) -> R<()> {
        let s = self.steps.get() + 1;
        self.steps.set(s);
        if s > MAX_STEPS {
            return fail("evaluation step limit exceeded");
        }
        Ok(())
    }

    pub(crate) fn eval(&self, e: &Expr, ctx: &[Item<'a>], fr: Frame<'_, 'a>) -> R<Vec<Item<'a>>> {
        self.tick()?;
        // Frames are large in debug builds; grow the stack on the heap for deep (≤ 200) nesting
        // instead of overflowing small worker-thread stacks.
        stacker::maybe_grow(STACK_RED_ZONE, STACK_GROW, || self.eval_inner(e, ctx, fr))
    }

    fn eval_inner(&self, e: &Expr, ctx: &[Item<'a>], fr: Frame<'_, 'a>) -> R<Vec<Item<'a>>> {
        match &e.kind {
            ExprKind::Lit(l) => Ok(match l {
                Lit::Empty => vec![],
                Lit::Bool(b) => vec![Item::Boolean(*b)],
                Lit::Int(i) => vec![Item::Integer(*i)],
                Lit::Dec(d) => vec![Item::Decimal(*d)],
                Lit::Str(s) => vec![Item::String(s.clone())],
                Lit::Date(t) => vec![Item::Date(*t)],
                Lit::DateTime(t) => vec![Item::DateTime(*t)],
                Lit::Time(t) => vec![Item::Time(*t)],
                Lit::Quantity(v, u) => vec![Item::Quantity(Quantity::new(*v, u))],
            }),
            ExprKind::This => Ok(ctx.to_vec()),
            ExprKind::Index => Ok(fr
                .index
                .map(|i| vec![Item::Integer(i as i64)])
                .unwrap_or_default()),
            ExprKind::Total => Ok(fr.total.map(<[Item<'a>]>::to_vec).unwrap_or_default()),
            ExprKind::Var(name) => self.var(name),
            ExprKind::Member(None, name) => {
                let mut out = Vec::new();
                let mut known = false;
                let type_like = name.starts_with(|c: char| c.is_ascii_uppercase());
                for item in ctx {
                    if type_like {
                        let ty = match item {
                            Item::Node {
                                fhir_type: Some(t), ..
                            } => Some(*t),
                            _ => None,
                        };
                        if let Some(t) = ty
                            && MODEL.get(name).is_some()
                        {
                            known = true;
                            if MODEL.is_a(t, name) {
                                out.push(item.clone());
                            }
                            continue;
                        }
                    }
                    known |= children_named(item, name, &mut out)?;
                }
                if !known && !ctx.is_empty() {
                    return Err(unknown_element(name, ctx));
                }
                Ok(out)
            }
            ExprKind::Member(Some(f), name) => {
                let input = self.eval(f, ctx, fr)?;
                let mut out = Vec::new();
                let mut known = false;
                for item in &input {
                    known |= children_named(item, name, &mut out)?;
                }
                if !known && !input.is_empty() {
                    return Err(unknown_element(name, &input));
                }
                Ok(out)
            }
            ExprKind::Call(f, name, args) => {
                let input = match f {
                    Some(f) => self.eval(f, ctx, fr)?,
                    None => ctx.to_vec(),
                };
                self.call(name, input, args, ctx, fr)
            }
            ExprKind::Indexer(f, idx) => {
                let input = self.eval(f, ctx, fr)?;
                let i = self.eval(idx, ctx, fr)?;
                let Some(i) = single(&i)? else {
                    return Ok(vec![]);
                };
                let Prim::Int(i) = prim(i) else {
                    return fail("index must be an integer");
                };
                Ok(usize::try_from(i)
                    .ok()
                    .and_then(|i| input.into_iter().nth(i))
                    .into_iter()
                    .collect())
            }
            ExprKind::Neg(inner) => {
                let v = self.eval(inner, ctx, fr)?;
                let Some(v) = single(&v)? else {
                    return Ok(vec![]);
                };
                Ok(match prim(v) {
                    Prim::Int(i) => vec![Item::Integer(
                        i.checked_neg()
                            .ok_or_else(|| EvalError("overflow".into()))?,
                    )],
                    Prim::Dec(d) => {
                        let mut n = -d;
                        if n.is_zero() {
                            n.set_sign_negative(false);
                        }
                        vec![Item::Decimal(n)]
                    }
                    Prim::Qty(q) => vec![Item::Quantity(Quantity {
                        value: -q.value,
                        unit: q.unit,
                    })],
                    _ => return fail("cannot negate a non-numeric value"),
                })
            }
            ExprKind::Is(inner, ty) => {
                let v = self.eval(inner, ctx, fr)?;
                match single(&v)? {
                    None => Ok(vec![]),
                    Some(item) => Ok(bool_item(is_type(item, ty)?)),
                }
            }
            ExprKind::As(inner, ty) => {
                let v = self.eval(inner, ctx, fr)?;
                let mut out = Vec::new();
                for item in v {
                    if is_type_x(&item, ty, true)? {
                        out.push(item);
                    }
                }
                Ok(out)
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r, ctx, fr),
        }
    }

    fn var(&self, name: &str) -> R<Vec<Item<'a>>> {
        if let Some(vars) = self.vars
            && let Some(v) = vars.get(name)
        {
            return Ok(v.clone());
        }
        if let Some((_, v)) = self.defined.borrow().iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        let s = |s: &str| Ok(vec![Item::String(s.to_string())]);
        match name {
            "resource" | "rootResource" | "context" => Ok(vec![self.root.clone()]),
            "ucum" => s("http://unitsofmeasure.org"),
            "sct" => s("http://snomed.info/sct"),
            "loinc" => s("http://loinc.org"),
            _ => {
                if let Some(v) = name.strip_prefix("vs-") {
                    return s(&format!("http://hl7.org/fhir/ValueSet/{v}"));
                }
                if let Some(v) = name.strip_prefix("ext-") {
                    return s(&format!("http://hl7.org/fhir/StructureDefinition/{v}"));
                }
                fail(format!("undefined variable %{name}"))
            }
        }
    }

    fn binary(
        &self,
        op: BinOp,
        l: &Expr,
        r: &Expr,
        ctx: &[Item<'a>],
        fr: Frame<'_, 'a>,
    ) -> R<Vec<Item<'a>>> {
        // short-circuit boolean logic
        match op {
            BinOp::And | BinOp::Or | BinOp::Implies | BinOp::Xor => {
                let a = to_bool(&self.eval(l, ctx, fr)?)?;
                match (op, a) {
                    (BinOp::And, Some(false)) => return Ok(bool_item(false)),
                    (BinOp::Or, Some(true)) => return Ok(bool_item(true)),
                    (BinOp::Implies, Some(false)) => return Ok(bool_item(true)),
                    _ => {}
                }
                let b = to_bool(&self.eval(r, ctx, fr)?)?;
                return Ok(opt_bool(match op {
                    BinOp::And => match (a, b) {
                        (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    BinOp::Or => match (a, b) {
                        (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    BinOp::Xor => match (a, b) {
                        (Some(x), Some(y)) => Some(x != y),
                        _ => None,
                    },
                    _ => match (a, b) {
                        (_, Some(true)) => Some(true),
                        (Some(true), Some(false)) => Some(false),
                        _ => None,
                    },
                }));
            }
            _ => {}
        }
        let a = self.eval(l, ctx, fr)?;
        let b = self.eval(r, ctx, fr)?;
        match op {
            BinOp::Union => {
                let mut out = Vec::with_capacity(a.len() + b.len());
                for x in a.into_iter().chain(b) {
                    distinct_push(&mut out, x);
                }
                Ok(out)
            }
            BinOp::Eq | BinOp::Ne => {
                if a.is_empty() || b.is_empty() {
                    return Ok(vec![]);
                }
                let r = if a.len() != b.len() {
                    Some(false)
                } else {
                    let mut res = Some(true);
                    for (x, y) in a.iter().zip(&b) {
                        match equals(x, y) {
                            Some(true) => {}
                            Some(false) => {
                                res = Some(false);
                                break;
                            }
                            None => res = None,
                        }
                    }
                    res
                };
                Ok(opt_bool(if op == BinOp::Ne { r.map(|x| !x) } else { r }))
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                let r = if a.len() != b.len() {
                    false
                } else {
                    let mut used = vec![false; b.len()];
                    a.iter().all(|x| {
                        for (i, y) in b.iter().enumerate() {
                            if !used[i] && equivalent(x, y) {
                                used[i] = true;
                                return true;
                            }
                        }
                        false
                    })
                };
                Ok(bool_item(if op == BinOp::NotEquiv { !r } else { r }))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let (Some(x), Some(y)) = (single(&a)?, single(&b)?) else {
                    return Ok(vec![]);
                };
                let o = compare(x, y)?;
                Ok(opt_bool(o.map(|o| match op {
                    BinOp::Lt => o == Ordering::Less,
                    BinOp::Le => o != Ordering::Greater,
                    BinOp::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                })))
            }
            BinOp::In | BinOp::Contains => {
                let (elem, coll) = if op == BinOp::In { (a, b) } else { (b, a) };
                let Some(x) = single(&elem)? else {
                    return Ok(vec![]);
                };
                Ok(bool_item(coll.iter().any(|y| equals(x, y) == Some(true))))
            }
            BinOp::Concat => {
                let x = single(&a)?.and_then(as_string).unwrap_or_default();
                let y = single(&b)?.and_then(as_string).unwrap_or_default();
                Ok(vec![Item::String(x + &y)])
            }
            _ => {
                let (Some(x), Some(y)) = (single(&a)?, single(&b)?) else {
                    return Ok(vec![]);
                };
                arith(op, x, y)
            }
        }
    }

    fn lambda_each(
        &self,
        input: &[Item<'a>],
        arg: &Expr,
        mut f: impl FnMut(usize, &Item<'a>, Vec<Item<'a>>) -> R<()>,
    ) -> R<()> {
        for (i, item) in input.iter().enumerate() {
            let fr = Frame {
                index: Some(i),
                total: None,
            };
            let v = self.eval(arg, std::slice::from_ref(item), fr)?;
            f(i, item, v)?;
        }
        Ok(())
    }

    fn arg_string(&self, arg: &Expr, ctx: &[Item<'a>], fr: Frame<'_, 'a>) -> R<Option<String>> {
        let v = self.eval(arg, ctx, fr)?;
        match single(&v)? {
            None => Ok(None),
            Some(i) => match prim(i) {
                Prim::Str(s) => Ok(Some(s.to_string())),
                _ => fail("expected a string argument"),
            },
        }
    }

    fn call(
        &self,
        name: &str,
        input: Vec<Item<'a>>,
        args: &[Expr],
        ctx: &[Item<'a>],
        fr: Frame<'_, 'a>,
    ) -> R<Vec<Item<'a>>> {
        match name {
            "exists" if args.is_empty() => Ok(bool_item(!input.is_empty())),
            "exists" | "all" | "where" | "select" | "repeat" | "repeatAll" | "ofType" | "is"
            | "as" | "iif" | "trace" | "aggregate" | "sort" | "defineVariable" => {
                self.call_lambda(name, input, args, ctx, fr)
            }
            _ => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(self.eval(a, ctx, fr)?);
                }
                self.apply(name, input, &vals)
            }
        }
    }

    #[inline(never)]
    fn call_lambda(
        &self,
        name: &str,
        input: Vec<Item<'a>>,
        args: &[Expr],
        ctx: &[Item<'a>],
        fr: Frame<'_, 'a>,
    ) -> R<Vec<Item<'a>>> {
        let arg = |i: usize| -> &Expr { &args[i] };
        match name {
            "exists" => {
                if args.is_empty() {
                    return Ok(bool_item(!input.is_empty()));
                }
                let mut found = false;
                for (i, item) in input.iter().enumerate() {
                    let v = self.eval(
                        arg(0),
                        std::slice::from_ref(item),
                        Frame {
                            index: Some(i),
                            total: None,
                        },
                    )?;
                    if to_bool(&v)? == Some(true) {
                        found = true;
                        break;
                    }
                }
                Ok(bool_item(found))
            }
            "all" => {
                let mut all = true;
                for (i, item) in input.iter().enumerate() {
                    let v = self.eval(
                        arg(0),
                        std::slice::from_ref(item),
                        Frame {
                            index: Some(i),
                            total: None,
                        },
                    )?;
                    if to_bool(&v)? != Some(true) {
                        all = false;
                        break;
                    }
                }
                Ok(bool_item(all))
            }
            "where" => {
                let mut out = Vec::new();
                self.lambda_each(&input, arg(0), |_, item, v| {
                    if to_bool(&v)? == Some(true) {
                        out.push(item.clone());
                    }
                    Ok(())
                })?;
                Ok(out)
            }
            "select" => {
                let mut out = Vec::new();
                self.lambda_each(&input, arg(0), |_, _, v| {
                    out.extend(v);
                    Ok(())
                })?;
                Ok(out)
            }
            "repeat" | "repeatAll" => {
                let mut out: Vec<Item<'a>> = Vec::new();
                let mut frontier = input;
                let mut rounds = 0;
                while !frontier.is_empty() {
                    rounds += 1;
                    if rounds > 1000 {
                        return fail("repeat() did not terminate");
                    }
                    let mut next = Vec::new();
                    self.lambda_each(&frontier, arg(0), |_, _, v| {
                        for x in v {
                            if name == "repeatAll" {
                                if out.len() >= 100_000 {
                                    return fail("repeatAll() result too large");
                                }
                            } else if out.iter().any(|o| equals(o, &x) == Some(true)) {
                                continue;
                            }
                            out.push(x.clone());
                            next.push(x);
                        }
                        Ok(())
                    })?;
                    frontier = next;
                }
                Ok(out)
            }
            "ofType" | "is" | "as" => {
                let ty = arg(0)
                    .as_type_name()
                    .ok_or_else(|| EvalError(format!("{name}() expects a type name")))?;
                if name == "is" {
                    return match single(&input)? {
                        None => Ok(vec![]),
                        Some(i) => Ok(bool_item(is_type(i, &ty)?)),
                    };
                }
                if name == "as" && input.len() > 1 {
                    return fail("as() on a collection of more than one item");
                }
                let mut out = Vec::new();
                for i in input {
                    if is_type_x(&i, &ty, true)? {
                        out.push(i);
                    }
                }
                Ok(out)
            }
            "iif" => {
                if input.len() > 1 {
                    return fail("iif() on a collection");
                }
                let focus: &[Item<'a>] = if args.is_empty() { ctx } else { &input };
                let focus = if input.is_empty() { ctx } else { focus };
                let c = self.eval(arg(0), focus, fr)?;
                let cond = match c.as_slice() {
                    [] => None,
                    [one] => match prim(one) {
                        Prim::Bool(b) => Some(b),
                        _ => return fail("iif() criterion must be boolean"),
                    },
                    _ => return fail("iif() criterion must be a single boolean"),
                };
                if cond == Some(true) {
                    self.eval(arg(1), focus, fr)
                } else if args.len() > 2 {
                    self.eval(arg(2), focus, fr)
                } else {
                    Ok(vec![])
                }
            }
            "trace" => {
                if args.len() > 1 {
                    let mut out = Vec::new();
                    self.lambda_each(&input, arg(1), |_, _, v| {
                        out.extend(v);
                        Ok(())
                    })?;
                }
                Ok(input)
            }
            "aggregate" => {
                let mut total = match args.get(1) {
                    Some(a) => self.eval(a, ctx, fr)?,
                    None => vec![],
                };
                for (i, item) in input.iter().enumerate() {
                    let f = Frame {
                        index: Some(i),
                        total: Some(&total),
                    };
                    let v = self.eval(arg(0), std::slice::from_ref(item), f)?;
                    total = v;
                }
                Ok(total)
            }
            "sort" => {
                let mut keyed: Vec<(Vec<Vec<Item<'a>>>, Item<'a>)> = Vec::new();
                for (i, item) in input.into_iter().enumerate() {
                    let mut keys = Vec::new();
                    for a in args {
                        let a = match &a.kind {
                            ExprKind::Neg(inner) => inner,
                            _ => a,
                        };
                        keys.push(self.eval(
                            a,
                            std::slice::from_ref(&item),
                            Frame {
                                index: Some(i),
                                total: None,
                            },
                        )?);
                    }
                    keyed.push((keys, item));
                }
                let mut err = None;
                keyed.sort_by(|(ka, a), (kb, b)| {
                    if args.is_empty() {
                        return compare(a, b)
                            .unwrap_or_else(|e| {
                                err = Some(e);
                                None
                            })
                            .unwrap_or(Ordering::Equal);
                    }
                    for ((x, y), a) in ka.iter().zip(kb).zip(args) {
                        let desc = matches!(a.kind, ExprKind::Neg(_));
                        // empty keys sort first, in both directions
                        let o = match (x.first(), y.first()) {
                            (None, None) => Ordering::Equal,
                            (None, Some(_)) => return Ordering::Less,
                            (Some(_), None) => return Ordering::Greater,
                            (Some(x), Some(y)) => compare(x, y)
                                .unwrap_or_else(|e| {
                                    err = Some(e);
                                    None
                                })
                                .unwrap_or(Ordering::Equal),
                        };
                        if o != Ordering::Equal {
                            return if desc { o.reverse() } else { o };
                        }
                    }
                    Ordering::Equal
                });
                if let Some(e) = err {
                    return Err(e);
                }
                Ok(keyed.into_iter().map(|(_, i)| i).collect())
            }
            "defineVariable" => {
                let Some(vname) = self.arg_string(arg(0), ctx, fr)? else {
                    return fail("variable name required");
                };
                if matches!(
                    vname.as_str(),
                    "resource" | "rootResource" | "context" | "ucum" | "sct" | "loinc"
                ) || self.defined.borrow().iter().any(|(n, _)| *n == vname)
                {
                    return fail(format!("variable %{vname} already defined"));
                }
                let value = match args.get(1) {
                    Some(a) => self.eval(a, &input, fr)?,
                    None => input.clone(),
                };
                self.defined.borrow_mut().push((vname, value));
                Ok(input)
            }
            _ => fail(format!("function '{name}' is not supported")),
        }
    }

    /// Functions whose arguments are plain values: evaluated up front by `call`, so this large
    /// function is never on the recursion path (keeps deep expressions within small stacks).
    #[inline(never)]
    fn apply(&self, name: &str, input: Vec<Item<'a>>, vals: &[Vec<Item<'a>>]) -> R<Vec<Item<'a>>> {
        let in_str = |input: &[Item<'a>]| -> R<Option<String>> {
            match single(input)? {
                None => Ok(None),
                Some(i) => match prim(i) {
                    Prim::Str(s) => Ok(Some(s.to_string())),
                    _ => fail(format!("{name}() expects a string input")),
                },
            }
        };
        match name {
            "empty" => Ok(bool_item(input.is_empty())),
            "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
                let mut vals = Vec::new();
                for i in &input {
                    match prim(i) {
                        Prim::Bool(b) => vals.push(b),
                        _ => return fail(format!("{name}() expects booleans")),
                    }
                }
                Ok(bool_item(match name {
                    "allTrue" => vals.iter().all(|b| *b),
                    "anyTrue" => vals.iter().any(|b| *b),
                    "allFalse" => vals.iter().all(|b| !*b),
                    _ => vals.iter().any(|b| !*b),
                }))
            }
            "subsetOf" | "supersetOf" => {
                let other = vals[0].clone();
                let (sub, sup) = if name == "subsetOf" {
                    (&input, &other)
                } else {
                    (&other, &input)
                };
                Ok(bool_item(
                    sub.iter()
                        .all(|x| sup.iter().any(|y| equals(x, y) == Some(true))),
                ))
            }
            "count" => Ok(vec![Item::Integer(input.len() as i64)]),
            "distinct" => {
                let mut out = Vec::new();
                for x in input {
                    distinct_push(&mut out, x);
                }
                Ok(out)
            }
            "isDistinct" => {
                let n = input.len();
                let mut out = Vec::new();
                for x in input {
                    distinct_push(&mut out, x);
                }
                Ok(bool_item(out.len() == n))
            }
            "single" => match input.len() {
                0 | 1 => Ok(input),
                n => fail(format!("single() on a collection of {n} items")),
            },
            "first" => Ok(input.into_iter().next().into_iter().collect()),
            "last" => Ok(input.into_iter().last().into_iter().collect()),
            "tail" => Ok(input.into_iter().skip(1).collect()),
            "skip" | "take" => {
                let n = val_int(&vals[0])?.unwrap_or(0);
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                Ok(if name == "skip" {
                    input.into_iter().skip(n).collect()
                } else {
                    input.into_iter().take(n).collect()
                })
            }
            "intersect" => {
                let other = vals[0].clone();
                let mut out = Vec::new();
                for x in input {
                    if other.iter().any(|y| equals(&x, y) == Some(true)) {
                        distinct_push(&mut out, x);
                    }
                }
                Ok(out)
            }
            "exclude" => {
                let other = vals[0].clone();
                Ok(input
                    .into_iter()
                    .filter(|x| !other.iter().any(|y| equals(x, y) == Some(true)))
                    .collect())
            }
            "union" => {
                let other = vals[0].clone();
                let mut out = Vec::new();
                for x in input.into_iter().chain(other) {
                    distinct_push(&mut out, x);
                }
                Ok(out)
            }
            "combine" => {
                let mut other = vals[0].clone();
                let mut input = input;
                input.append(&mut other);
                Ok(input)
            }
            "toBoolean" | "convertsToBoolean" => {
                self.convert(name, &input, |i| to_boolean(i).map(Item::Boolean))
            }
            "toInteger" | "convertsToInteger" | "toLong" | "convertsToLong" => {
                self.convert(name, &input, |i| to_integer(i).map(Item::Integer))
            }
            "toDecimal" | "convertsToDecimal" => {
                self.convert(name, &input, |i| to_decimal(i).map(Item::Decimal))
            }
            "toDate" | "convertsToDate" => self.convert(name, &input, |i| {
                to_temporal(i, TKind::Date).map(Item::Date)
            }),
            "toDateTime" | "convertsToDateTime" => self.convert(name, &input, |i| {
                to_temporal(i, TKind::DateTime).map(Item::DateTime)
            }),
            "toTime" | "convertsToTime" => self.convert(name, &input, |i| {
                to_temporal(i, TKind::Time).map(Item::Time)
            }),
            "toString" | "convertsToString" => {
                self.convert(name, &input, |i| as_string(i).map(Item::String))
            }
            "toQuantity" | "convertsToQuantity" => {
                let unit = match vals.first() {
                    Some(a) => val_string(a)?,
                    None => None,
                };
                self.convert(name, &input, |i| {
                    let q = to_quantity(i)?;
                    match &unit {
                        None => Some(Item::Quantity(q)),
                        Some(u) => {
                            let target = quantity::normalize_calendar(u).unwrap_or(u);
                            q.convert(target).map(Item::Quantity).or_else(|| {
                                // calendar <-> ucum time units of the same meaning
                                (quantity::calendar_of(&q.unit) == quantity::calendar_of(u)
                                    && matches!(
                                        quantity::calendar_of(u),
                                        Some(
                                            "week"
                                                | "day"
                                                | "hour"
                                                | "minute"
                                                | "second"
                                                | "millisecond"
                                        )
                                    ))
                                .then(|| Item::Quantity(Quantity::new(q.value, u)))
                            })
                        }
                    }
                })
            }
            "indexOf" | "lastIndexOf" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let Some(sub) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                let pos = if name == "indexOf" {
                    s.find(&sub)
                } else {
                    s.rfind(&sub)
                };
                Ok(vec![Item::Integer(
                    pos.map(|p| s[..p].chars().count() as i64).unwrap_or(-1),
                )])
            }
            "substring" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let Some(start) = val_int(&vals[0])? else {
                    return Ok(vec![]);
                };
                let chars: Vec<char> = s.chars().collect();
                if start < 0 || start as usize >= chars.len() {
                    return Ok(vec![]);
                }
                let start = start as usize;
                let len = match vals.get(1) {
                    Some(a) => match val_int(a)? {
                        Some(l) => l.max(0) as usize,
                        None => chars.len(),
                    },
                    None => chars.len(),
                };
                let end = start.saturating_add(len).min(chars.len());
                Ok(vec![Item::String(chars[start..end].iter().collect())])
            }
            "startsWith" | "endsWith" | "contains" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let Some(sub) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                Ok(bool_item(match name {
                    "startsWith" => s.starts_with(&sub),
                    "endsWith" => s.ends_with(&sub),
                    _ => s.contains(&sub),
                }))
            }
            "upper" | "lower" | "trim" | "length" | "toChars" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                Ok(match name {
                    "upper" => vec![Item::String(s.to_uppercase())],
                    "lower" => vec![Item::String(s.to_lowercase())],
                    "trim" => vec![Item::String(s.trim().to_string())],
                    "length" => vec![Item::Integer(s.chars().count() as i64)],
                    _ => s.chars().map(|c| Item::String(c.to_string())).collect(),
                })
            }
            "replace" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let (Some(p), Some(r)) = (val_string(&vals[0])?, val_string(&vals[1])?) else {
                    return Ok(vec![]);
                };
                if p.is_empty() {
                    let mut out = String::new();
                    for c in s.chars() {
                        out.push_str(&r);
                        out.push(c);
                    }
                    out.push_str(&r);
                    return Ok(vec![Item::String(out)]);
                }
                Ok(vec![Item::String(s.replace(&p, &r))])
            }
            "matches" | "matchesFull" | "replaceMatches" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let Some(p) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                let pattern = if name == "matchesFull" {
                    format!("^(?:{p})$")
                } else {
                    p
                };
                let re = regex::RegexBuilder::new(&pattern)
                    .dot_matches_new_line(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| EvalError(format!("invalid regex: {e}")))?;
                if name == "replaceMatches" {
                    let Some(r) = val_string(&vals[1])? else {
                        return Ok(vec![]);
                    };
                    if pattern.is_empty() {
                        return Ok(vec![Item::String(s)]);
                    }
                    // FHIRPath uses $1 for groups, as the regex crate does
                    return Ok(vec![Item::String(
                        re.replace_all(&s, r.as_str()).into_owned(),
                    )]);
                }
                Ok(bool_item(re.is_match(&s)))
            }
            "split" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let Some(sep) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                if sep.is_empty() {
                    return Ok(s.chars().map(|c| Item::String(c.to_string())).collect());
                }
                Ok(s.split(sep.as_str())
                    .map(|p| Item::String(p.to_string()))
                    .collect())
            }
            "join" => {
                let sep = match vals.first() {
                    Some(a) => val_string(a)?.unwrap_or_default(),
                    None => String::new(),
                };
                let mut parts = Vec::new();
                for i in &input {
                    match prim(i) {
                        Prim::Str(s) => parts.push(s.to_string()),
                        _ => return fail("join() expects strings"),
                    }
                }
                Ok(vec![Item::String(parts.join(&sep))])
            }
            "encode" | "decode" | "escape" | "unescape" => {
                let Some(s) = in_str(&input)? else {
                    return Ok(vec![]);
                };
                let Some(fmt) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                let out = match (name, fmt.as_str()) {
                    ("encode", "base64") => Some(base64_encode(s.as_bytes(), false)),
                    ("encode", "urlbase64") => Some(base64_encode(s.as_bytes(), true)),
                    ("encode", "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
                    ("decode", "base64" | "urlbase64") => {
                        base64_decode(&s).and_then(|b| String::from_utf8(b).ok())
                    }
                    ("decode", "hex") => {
                        let b = s.as_bytes();
                        if b.len() % 2 != 0 {
                            None
                        } else {
                            let bytes: Option<Vec<u8>> = b
                                .chunks(2)
                                .map(|c| {
                                    std::str::from_utf8(c)
                                        .ok()
                                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                                })
                                .collect();
                            bytes.and_then(|b| String::from_utf8(b).ok())
                        }
                    }
                    ("escape", "html") => Some(
                        s.replace('&', "&amp;")
                            .replace('<', "&lt;")
                            .replace('>', "&gt;")
                            .replace('"', "&quot;")
                            .replace('\'', "&#39;"),
                    ),
                    ("escape", "json") => Some(s.replace('\\', "\\\\").replace('"', "\\\"")),
                    ("unescape", "html") => Some(
                        s.replace("&lt;", "<")
                            .replace("&gt;", ">")
                            .replace("&quot;", "\"")
                            .replace("&#39;", "'")
                            .replace("&amp;", "&"),
                    ),
                    ("unescape", "json") => Some(s.replace("\\\"", "\"").replace("\\\\", "\\")),
                    _ => None,
                };
                Ok(out.map(Item::String).into_iter().collect())
            }
            "abs" | "ceiling" | "floor" | "truncate" | "exp" | "ln" | "sqrt" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                match prim(i) {
                    Prim::Int(n) => Ok(match name {
                        "abs" => n.checked_abs().map(Item::Integer).into_iter().collect(),
                        "ceiling" | "floor" | "truncate" => vec![Item::Integer(n)],
                        "exp" => f64_item((n as f64).exp()),
                        "ln" => f64_item((n as f64).ln()),
                        _ => f64_item((n as f64).sqrt()),
                    }),
                    Prim::Dec(d) => Ok(match name {
                        "abs" => vec![Item::Decimal(d.abs())],
                        "ceiling" => d.ceil().to_i64().map(Item::Integer).into_iter().collect(),
                        "floor" => d.floor().to_i64().map(Item::Integer).into_iter().collect(),
                        "truncate" => d.trunc().to_i64().map(Item::Integer).into_iter().collect(),
                        "exp" => f64_item(dec_to_f64(d).exp()),
                        "ln" => f64_item(dec_to_f64(d).ln()),
                        _ => f64_item(dec_to_f64(d).sqrt()),
                    }),
                    Prim::Qty(q) if name == "abs" => Ok(vec![Item::Quantity(Quantity {
                        value: q.value.abs(),
                        unit: q.unit,
                    })]),
                    _ => fail(format!("{name}() expects a number")),
                }
            }
            "log" | "power" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                let Some(a) = single(&vals[0])?.cloned() else {
                    return Ok(vec![]);
                };
                let x = match prim(i) {
                    Prim::Int(n) => Decimal::from(n),
                    Prim::Dec(d) => d,
                    _ => return fail(format!("{name}() expects a number")),
                };
                let y = match prim(&a) {
                    Prim::Int(n) => Decimal::from(n),
                    Prim::Dec(d) => d,
                    _ => return fail(format!("{name}() expects a number")),
                };
                if name == "log" {
                    return Ok(f64_item(dec_to_f64(x).ln() / dec_to_f64(y).ln()));
                }
                if let (Prim::Int(b), Prim::Int(e)) = (prim(i), prim(&a))
                    && e >= 0
                {
                    return Ok(u32::try_from(e)
                        .ok()
                        .and_then(|e| b.checked_pow(e))
                        .map(Item::Integer)
                        .into_iter()
                        .collect());
                }
                Ok(f64_item(dec_to_f64(x).powf(dec_to_f64(y))))
            }
            "round" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                let p = match vals.first() {
                    Some(a) => val_int(a)?.unwrap_or(0),
                    None => 0,
                };
                if p < 0 {
                    return fail("round() precision must be >= 0");
                }
                let d = match prim(i) {
                    Prim::Int(n) => Decimal::from(n),
                    Prim::Dec(d) => d,
                    _ => return fail("round() expects a number"),
                };
                Ok(vec![Item::Decimal(d.round_dp_with_strategy(
                    p.min(28) as u32,
                    rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                ))])
            }
            "children" => {
                let mut out = Vec::new();
                for i in &input {
                    all_children(i, &mut out);
                }
                Ok(out)
            }
            "descendants" => {
                let mut out = Vec::new();
                let mut frontier = input;
                let mut depth = 0;
                while !frontier.is_empty() && depth < 200 {
                    depth += 1;
                    let mut next = Vec::new();
                    for i in &frontier {
                        all_children(i, &mut next);
                    }
                    out.extend(next.iter().cloned());
                    if out.len() > 1_000_000 {
                        return fail("descendants() too large");
                    }
                    frontier = next;
                }
                Ok(out)
            }
            "now" => Ok(vec![Item::DateTime(Temporal::now())]),
            "today" => {
                let n = Temporal::now().with_precision(temporal::DAY);
                Ok(vec![Item::Date(Temporal {
                    kind: TKind::Date,
                    tz: None,
                    ..n
                })])
            }
            "timeOfDay" => {
                let n = Temporal::now();
                Ok(vec![Item::Time(Temporal {
                    kind: TKind::Time,
                    tz: None,
                    ..n
                })])
            }
            "not" => match to_bool(&input)? {
                None => Ok(vec![]),
                Some(b) => Ok(bool_item(!b)),
            },
            "lowBoundary" | "highBoundary" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                let digits = match vals.first() {
                    Some(a) => val_int(a)?,
                    None => None,
                };
                let high = name == "highBoundary";
                Ok(match prim(i) {
                    Prim::Int(n) => {
                        decimal_boundary(Decimal::from(n), digits, high, true).map(Item::Decimal)
                    }
                    Prim::Dec(d) => decimal_boundary(d, digits, high, false).map(Item::Decimal),
                    Prim::Qty(q) => decimal_boundary(q.value, digits, high, false).map(|v| {
                        Item::Quantity(Quantity {
                            value: v,
                            unit: q.unit,
                        })
                    }),
                    Prim::Date(t) => temporal_boundary(&t, digits, high).map(Item::Date),
                    Prim::DateTime(t) => temporal_boundary(&t, digits, high).map(Item::DateTime),
                    Prim::Time(t) => temporal_boundary(&t, digits, high).map(Item::Time),
                    _ => None,
                }
                .into_iter()
                .collect())
            }
            "precision" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                Ok(match prim(i) {
                    Prim::Dec(d) => Some(d.scale() as i64),
                    Prim::Int(_) => Some(0),
                    Prim::Date(t) | Prim::DateTime(t) => Some(match t.precision {
                        1 => 4,
                        2 => 6,
                        3 => 8,
                        4 => 10,
                        5 => 12,
                        6 => 14,
                        _ => 17,
                    }),
                    Prim::Time(t) => Some(match t.precision {
                        4 => 2,
                        5 => 4,
                        6 => 6,
                        _ => 9,
                    }),
                    _ => None,
                }
                .map(Item::Integer)
                .into_iter()
                .collect())
            }
            "comparable" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                let Some(o) = single(&vals[0])?.cloned() else {
                    return Ok(vec![]);
                };
                match (prim(i), prim(&o)) {
                    (Prim::Qty(a), Prim::Qty(b)) => Ok(bool_item(a.compare(&b).is_some())),
                    _ => Ok(bool_item(false)),
                }
            }
            "type" => Ok(input
                .iter()
                .map(|i| {
                    let (ns, n) = type_of(i);
                    Item::TypeInfo {
                        namespace: ns,
                        name: n,
                    }
                })
                .collect()),
            "extension" | "hasExtension" => {
                let Some(url) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                let mut exts = Vec::new();
                for i in &input {
                    let _ = children_named(i, "extension", &mut exts)?;
                }
                let matching = exts.into_iter().filter(|e| match e {
                    Item::Node {
                        json: JsonValue::Object(o),
                        ..
                    } => o.get("url").and_then(JsonValue::as_str) == Some(url.as_str()),
                    _ => false,
                });
                if name == "hasExtension" {
                    let mut m = matching;
                    return Ok(bool_item(m.next().is_some()));
                }
                Ok(matching.collect())
            }
            "resolve" => {
                let mut out = Vec::new();
                for i in &input {
                    self.resolve(i, &mut out);
                }
                Ok(out)
            }
            "hasValue" => Ok(bool_item(match single(&input) {
                Ok(Some(Item::Node { json, .. })) => {
                    !json.is_null() && !json.is_object() && !json.is_array()
                }
                Ok(Some(i)) => !matches!(prim(i), Prim::Complex),
                _ => false,
            })),
            "getValue" => Ok(match single(&input)? {
                Some(i @ Item::Node { json, .. }) if !json.is_null() && !json.is_object() => {
                    prim_to_item(prim(i)).into_iter().collect()
                }
                _ => vec![],
            }),
            "htmlChecks" | "htmlChecks2" => Ok(bool_item(true)),
            "conformsTo" => {
                let Some(url) = val_string(&vals[0])? else {
                    return Ok(vec![]);
                };
                let Some(t) = url
                    .strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                    .and_then(|t| MODEL.intern(t))
                else {
                    return fail(format!("conformsTo(): unknown profile {url}"));
                };
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                Ok(bool_item(match i {
                    Item::Node {
                        fhir_type: Some(ft),
                        ..
                    } => MODEL.is_a(ft, t),
                    _ => false,
                }))
            }
            "yearOf" | "monthOf" | "dayOf" | "hourOf" | "minuteOf" | "secondOf"
            | "millisecondOf" => {
                let Some(i) = single(&input)? else {
                    return Ok(vec![]);
                };
                let (Prim::Date(t) | Prim::DateTime(t) | Prim::Time(t)) = prim(i) else {
                    return fail(format!("{name}() expects a date/time"));
                };
                let (v, p) = match name {
                    "yearOf" => (i64::from(t.year), temporal::YEAR),
                    "monthOf" => (i64::from(t.month), temporal::MONTH),
                    "dayOf" => (i64::from(t.day), temporal::DAY),
                    "hourOf" => (i64::from(t.hour), temporal::HOUR),
                    "minuteOf" => (i64::from(t.minute), temporal::MINUTE),
                    "secondOf" => (i64::from(t.second), temporal::SECOND),
                    _ => (i64::from(t.millis), temporal::MILLIS),
                };
                Ok(if t.precision >= p {
                    vec![Item::Integer(v)]
                } else {
                    vec![]
                })
            }
            _ => fail(format!("function '{name}' is not supported")),
        }
    }

    fn convert(
        &self,
        name: &str,
        input: &[Item<'a>],
        f: impl Fn(&Item<'a>) -> Option<Item<'a>>,
    ) -> R<Vec<Item<'a>>> {
        let Some(i) = single(input)? else {
            return Ok(vec![]);
        };
        let r = f(i);
        if name.starts_with("convertsTo") {
            Ok(bool_item(r.is_some()))
        } else {
            Ok(r.into_iter().collect())
        }
    }

    fn resolve(&self, item: &Item<'a>, out: &mut Vec<Item<'a>>) {
        let reference = match item {
            Item::Node {
                json: JsonValue::Object(o),
                ..
            } => match o.get("reference") {
                Some(JsonValue::String(s)) => s.as_str(),
                _ => return,
            },
            Item::Node {
                json: JsonValue::String(s),
                ..
            } => s.as_str(),
            _ => return,
        };
        let ref_json = match item {
            Item::Node { json, .. } => *json,
            _ => return,
        };
        let lookups = self.lookups.get_or_init(|| Lookups::of(&self.root));
        if let Some(id) = reference.strip_prefix('#') {
            for c in lookups.contained.get(id).into_iter().flatten() {
                out.push(Item::Node {
                    json: c,
                    fhir_type: node_type_of(c, None),
                    ext: None,
                });
            }
            return;
        }
        // Bundle: the entry with that fullUrl, or whose fullUrl ends with `/` and the reference.
        if let Some(r) = lookups.entries.get(reference) {
            out.push(Item::Node {
                json: r,
                fhir_type: node_type_of(r, None),
                ext: None,
            });
            return;
        }
        let path = reference.split(['?', '#']).next().unwrap_or("");
        let path = match path.find("/_history/") {
            Some(i) => &path[..i],
            None => path,
        };
        let mut segs = path.rsplit('/');
        let _id = segs.next();
        if let Some(ty) = segs.next()
            && let Some(t) = MODEL.intern(ty)
            && MODEL.is_resource_type(t)
        {
            out.push(Item::Resolved {
                resource_type: t,
                reference: ref_json,
            });
        }
    }
}

fn num_of(p: &Prim<'_>) -> Option<Decimal> {
    match p {
        Prim::Int(i) => Some(Decimal::from(*i)),
        Prim::Dec(d) => Some(*d),
        _ => None,
    }
}

fn arith<'a>(op: BinOp, x: &Item<'a>, y: &Item<'a>) -> R<Vec<Item<'a>>> {
    let (px, py) = (prim(x), prim(y));
    let none = || Ok(vec![]);
    match (&px, &py) {
        (Prim::Int(a), Prim::Int(b)) => {
            let (a, b) = (*a, *b);
            let r = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::IntDiv => {
                    if b == 0 {
                        None
                    } else {
                        a.checked_div(b)
                    }
                }
                BinOp::Mod => {
                    if b == 0 {
                        None
                    } else {
                        a.checked_rem(b)
                    }
                }
                BinOp::Div => {
                    if b == 0 {
                        return none();
                    }
                    return Ok(Decimal::from(a)
                        .checked_div(Decimal::from(b))
                        .map(|d| Item::Decimal(d.normalize()))
                        .into_iter()
                        .collect());
                }
                _ => None,
            };
            Ok(r.map(Item::Integer).into_iter().collect())
        }
        (Prim::Int(_) | Prim::Dec(_), Prim::Int(_) | Prim::Dec(_)) => {
            let (a, b) = (
                num_of(&px).unwrap_or_default(),
                num_of(&py).unwrap_or_default(),
            );
            let r = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div => {
                    if b.is_zero() {
                        None
                    } else {
                        a.checked_div(b)
                    }
                }
                BinOp::IntDiv => {
                    if b.is_zero() {
                        None
                    } else {
                        return Ok(a
                            .checked_div(b)
                            .and_then(|d| d.trunc().to_i64())
                            .map(Item::Integer)
                            .into_iter()
                            .collect());
                    }
                }
                BinOp::Mod => {
                    if b.is_zero() {
                        None
                    } else {
                        a.checked_rem(b)
                    }
                }
                _ => None,
            };
            Ok(r.map(Item::Decimal).into_iter().collect())
        }
        (Prim::Str(a), Prim::Str(b)) if op == BinOp::Add => {
            Ok(vec![Item::String(format!("{a}{b}"))])
        }
        (Prim::Date(t) | Prim::DateTime(t) | Prim::Time(t), Prim::Qty(q))
            if matches!(op, BinOp::Add | BinOp::Sub) =>
        {
            let Some(unit) = quantity::calendar_of(&q.unit) else {
                return fail(format!("cannot add '{}' to a date", q.unit));
            };
            if !q.is_calendar() && matches!(unit, "year" | "month") {
                return fail(format!("UCUM unit '{}' cannot be added to a date", q.unit));
            }
            let mut v = q.value;
            if op == BinOp::Sub {
                v = -v;
            }
            let (amount, unit) = if v.fract().is_zero() {
                (v.to_i64(), unit)
            } else {
                (v.trunc().to_i64(), unit)
            };
            let Some(amount) = amount else { return none() };
            let r = t.add(amount, unit);
            Ok(match (r, &px) {
                (Some(r), Prim::Date(_)) => vec![Item::Date(r)],
                (Some(r), Prim::DateTime(_)) => vec![Item::DateTime(r)],
                (Some(r), _) => vec![Item::Time(r)],
                (None, _) => vec![],
            })
        }
        (Prim::Qty(a), Prim::Qty(b)) => match op {
            BinOp::Add | BinOp::Sub => {
                let b2 = if a.unit == b.unit {
                    Some(b.clone())
                } else {
                    b.convert(&a.unit)
                };
                let Some(b2) = b2 else { return none() };
                let v = if op == BinOp::Add {
                    a.value.checked_add(b2.value)
                } else {
                    a.value.checked_sub(b2.value)
                };
                Ok(v.map(|v| {
                    Item::Quantity(Quantity {
                        value: v,
                        unit: a.unit.clone(),
                    })
                })
                .into_iter()
                .collect())
            }
            BinOp::Mul | BinOp::Div => {
                if op == BinOp::Div && b.value.is_zero() {
                    return none();
                }
                Ok(a.mul_div(b, op == BinOp::Div)
                    .map(Item::Quantity)
                    .into_iter()
                    .collect())
            }
            _ => fail("unsupported quantity operation"),
        },
        (Prim::Qty(a), Prim::Int(_) | Prim::Dec(_)) if matches!(op, BinOp::Mul | BinOp::Div) => {
            let b = num_of(&py).unwrap_or_default();
            let v = if op == BinOp::Mul {
                a.value.checked_mul(b)
            } else if b.is_zero() {
                None
            } else {
                a.value.checked_div(b)
            };
            Ok(v.map(|v| {
                Item::Quantity(Quantity {
                    value: v,
                    unit: a.unit.clone(),
                })
            })
            .into_iter()
            .collect())
        }
        (Prim::Int(_) | Prim::Dec(_), Prim::Qty(b)) if op == BinOp::Mul => {
            let a = num_of(&px).unwrap_or_default();
            Ok(a.checked_mul(b.value)
                .map(|v| {
                    Item::Quantity(Quantity {
                        value: v,
                        unit: b.unit.clone(),
                    })
                })
                .into_iter()
                .collect())
        }
        _ => fail(format!(
            "cannot apply {op:?} to {} and {}",
            type_of(x).1,
            type_of(y).1
        )),
    }
}
