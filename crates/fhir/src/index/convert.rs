//! Conversion of one FHIRPath item into the index values of a parameter type.
//!
//! The FHIR type of an item comes from the FHIRPath engine when it knows it; otherwise it is inferred from
//! the shape of the JSON (a `Period` has `start`/`end`, a `HumanName` `family`/`given`, …).

use serde_json::{Map, Value};
use socle_fhirpath::Item;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::IndexValue;
use super::date::parse_date_range;
use super::number::number_range;
use crate::search_params::{ParamType, is_resource_type};

/// The longest `norm` form, in bytes: its first bytes of a longer value (cut on a character). An index entry of
/// PostgreSQL's B-trees holds at most 2,704 bytes (a pasted report in a `CodeableConcept.text` or an address
/// line would otherwise make its write fail); searches normalise their values the same way, so a prefix search
/// with a longer value still finds it, and `:contains` looks into the first 1,024 bytes.
pub const MAX_NORM_BYTES: usize = 1024;

/// The `norm` form of a string value: canonical decomposition (NFD), combining marks removed, lower-cased
/// (`"Chalmers Élodie"` → `"chalmers elodie"`), at most [`MAX_NORM_BYTES`].
pub fn normalize_string(s: &str) -> String {
    let mut n: String = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.nfd()
            .filter(|c| !is_combining_mark(*c))
            .flat_map(char::to_lowercase)
            .collect()
    };
    if n.len() > MAX_NORM_BYTES {
        let mut cut = MAX_NORM_BYTES;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

/// Converts one item for a parameter of type `kind`, calling `emit` for each value (none if the item has no
/// value of that kind). `Composite` and `Special` items produce nothing here.
pub(crate) fn convert(kind: ParamType, item: &Item<'_>, emit: &mut dyn FnMut(IndexValue)) {
    if let Item::Node { json, .. } = item {
        convert_json(kind, json, item.fhir_type(), emit);
        return;
    }
    // Values computed by the expression itself.
    match item {
        Item::String(s) => convert_primitive_str(kind, s, emit),
        Item::Boolean(b) => {
            if kind == ParamType::Token {
                emit(IndexValue::token(None, if *b { "true" } else { "false" }));
            }
        }
        Item::Integer(i) => match kind {
            ParamType::Number | ParamType::Quantity => {
                number_value(kind, &i.to_string(), None, emit)
            }
            ParamType::Token => emit(IndexValue::token(None, &i.to_string())),
            _ => {}
        },
        // System decimals and dates/date-times: through their text form (keeps the written precision).
        _ => match kind {
            ParamType::Number | ParamType::Quantity | ParamType::Date => {
                if let Some(text) = item.to_string_value() {
                    match kind {
                        ParamType::Date => convert_primitive_str(kind, &text, emit),
                        _ => number_value(kind, &text, None, emit),
                    }
                }
            }
            _ => {}
        },
    }
}

fn convert_json(kind: ParamType, json: &Value, ty: Option<&str>, emit: &mut dyn FnMut(IndexValue)) {
    match json {
        Value::String(s) => convert_primitive_str(kind, s, emit),
        Value::Bool(b) => {
            if kind == ParamType::Token {
                emit(IndexValue::token(None, if *b { "true" } else { "false" }));
            }
        }
        Value::Number(n) => match kind {
            ParamType::Number | ParamType::Quantity => {
                number_value(kind, &n.to_string(), None, emit)
            }
            ParamType::Token => emit(IndexValue::token(None, &n.to_string())),
            _ => {}
        },
        Value::Object(obj)
            if ty == Some("Extension") || (ty.is_none() && obj.contains_key("url")) =>
        {
            // A parameter on an extension indexes the extension's value[x].
            if let Some((key, value)) = obj
                .iter()
                .find(|(k, _)| k.len() > 5 && k.starts_with("value"))
            {
                let vtype = &key[5..];
                let lower;
                let vtype = if PRIMITIVE_SUFFIXES.contains(&vtype) {
                    lower = lower_first(vtype);
                    lower.as_str()
                } else {
                    vtype
                };
                convert_json(kind, value, Some(vtype), emit);
            }
        }
        Value::Object(obj) => match kind {
            ParamType::String => string_object(obj, ty, emit),
            ParamType::Token => token_object(obj, ty, emit),
            ParamType::Reference => reference_object(obj, emit),
            ParamType::Date => date_object(obj, ty, emit),
            ParamType::Quantity => quantity_object(obj, ty, emit),
            ParamType::Number | ParamType::Uri | ParamType::Composite | ParamType::Special => {}
        },
        // A FHIRPath item is never an array or null, but be safe.
        Value::Array(items) => {
            for v in items {
                convert_json(kind, v, ty, emit);
            }
        }
        Value::Null => {}
    }
}

/// The `value[x]` suffixes of FHIR primitive types (their type names start with a lower-case letter).
const PRIMITIVE_SUFFIXES: &[&str] = &[
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "Date",
    "DateTime",
    "Decimal",
    "Id",
    "Instant",
    "Integer",
    "Markdown",
    "Oid",
    "PositiveInt",
    "String",
    "Time",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
];

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn convert_primitive_str(kind: ParamType, s: &str, emit: &mut dyn FnMut(IndexValue)) {
    if s.is_empty() {
        return;
    }
    match kind {
        ParamType::String => emit(IndexValue::string(s)),
        ParamType::Token => emit(IndexValue::token(None, s)),
        // A canonical or URI used as a reference: kept as a URL (without `|version`), and as Type/id too when it
        // names one (`Library/x`, `http://…/ValueSet/y`), so both forms of search find it.
        ParamType::Reference => {
            let url = s.split('|').next().unwrap_or(s);
            emit(match parse_reference(url) {
                IndexValue::Reference {
                    target_type,
                    target_id,
                    ..
                } => IndexValue::Reference {
                    target_type,
                    target_id,
                    url: Some(url.to_string()),
                },
                other => other,
            })
        }
        ParamType::Date => {
            if let Some((lo, hi)) = parse_date_range(s) {
                emit(IndexValue::Date { lo, hi });
            }
        }
        ParamType::Uri => emit(IndexValue::Uri(s.to_string())),
        ParamType::Number | ParamType::Quantity | ParamType::Composite | ParamType::Special => {}
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Strings of a field that is a string or an array of strings.
fn str_fields<'a>(obj: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a str> {
    let v = obj.get(key);
    let single = v.and_then(Value::as_str);
    let many = v
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or(&[]);
    single
        .into_iter()
        .chain(many.iter().filter_map(Value::as_str))
        .filter(|s| !s.is_empty())
}

const NAME_PARTS: &[&str] = &["family", "given", "prefix", "suffix", "text"];
const ADDRESS_PARTS: &[&str] = &[
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
];

fn string_object(obj: &Map<String, Value>, ty: Option<&str>, emit: &mut dyn FnMut(IndexValue)) {
    let parts = match ty {
        Some("HumanName") => NAME_PARTS,
        Some("Address") => ADDRESS_PARTS,
        _ if ["family", "given", "prefix", "suffix"]
            .iter()
            .any(|k| obj.contains_key(*k)) =>
        {
            NAME_PARTS
        }
        _ if ["line", "city", "district", "state", "postalCode", "country"]
            .iter()
            .any(|k| obj.contains_key(*k)) =>
        {
            ADDRESS_PARTS
        }
        _ => &["text"],
    };
    for key in parts {
        for s in str_fields(obj, key) {
            emit(IndexValue::string(s));
        }
    }
}

/// `ContactPoint.system` codes: a ContactPoint's system is not a URI, so it is not a token system.
const CONTACT_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];

fn token_object(obj: &Map<String, Value>, ty: Option<&str>, emit: &mut dyn FnMut(IndexValue)) {
    let shape = match ty {
        Some(t @ ("Coding" | "CodeableConcept" | "Identifier" | "ContactPoint")) => t,
        _ if obj.contains_key("coding") => "CodeableConcept",
        _ if obj.contains_key("code") => "Coding",
        _ if obj.contains_key("value") => {
            if str_field(obj, "system").is_some_and(|s| CONTACT_SYSTEMS.contains(&s))
                || obj.contains_key("rank")
            {
                "ContactPoint"
            } else {
                "Identifier"
            }
        }
        _ => return,
    };
    match shape {
        "Coding" => coding(obj, emit),
        "CodeableConcept" => {
            if let Some(codings) = obj.get("coding").and_then(Value::as_array) {
                for c in codings.iter().filter_map(Value::as_object) {
                    coding(c, emit);
                }
            }
        }
        "Identifier" => {
            if let Some(value) = str_field(obj, "value") {
                emit(IndexValue::token(str_field(obj, "system"), value));
            }
        }
        _ => {
            if let Some(value) = str_field(obj, "value") {
                emit(IndexValue::token(None, value));
            }
        }
    }
}

/// An Identifier's type and value, for the `:of-type` modifier: one token per coding of `type` that has a code,
/// its system `type-system|type-code` (`|type-code` without a system) and its code the identifier's value.
/// Nothing for other items, or without a value.
pub(crate) fn identifier_type(item: &Item<'_>, emit: &mut dyn FnMut(IndexValue)) {
    let Item::Node { json, .. } = item else {
        return;
    };
    let Some(obj) = json.as_object() else {
        return;
    };
    match item.fhir_type() {
        Some("Identifier") => {}
        None if obj.contains_key("value") && obj.contains_key("type") => {}
        _ => return,
    }
    let Some(value) = str_field(obj, "value") else {
        return;
    };
    for c in obj
        .get("type")
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        if let Some(code) = str_field(c, "code") {
            let system = str_field(c, "system").unwrap_or_default();
            emit(IndexValue::Token {
                system: Some(format!("{system}|{code}")),
                code: value.to_string(),
            });
        }
    }
}

/// The text a token value carries, as string values of the same parameter, for the `:text` modifier (R4: "text
/// associated with the code/value — either `CodeableConcept.text`, `Coding.display`, or
/// `Identifier.type.text`"): a CodeableConcept's `text` and its codings' `display`, a Coding's `display`, an
/// Identifier's `type.text`. Other items (codes, strings, ContactPoints) carry none. Composite components do not
/// call this: their token components stay tokens.
pub(crate) fn token_text(item: &Item<'_>, emit: &mut dyn FnMut(IndexValue)) {
    let Item::Node { json, .. } = item else {
        return;
    };
    let Some(obj) = json.as_object() else {
        return;
    };
    let shape = match item.fhir_type() {
        Some(t @ ("Coding" | "CodeableConcept" | "Identifier")) => t,
        Some(_) => return,
        None if obj.contains_key("coding") || obj.contains_key("text") => "CodeableConcept",
        None if obj.contains_key("code") => "Coding",
        None if obj.contains_key("value") => "Identifier",
        None => return,
    };
    let display = |c: &Map<String, Value>, emit: &mut dyn FnMut(IndexValue)| {
        if let Some(d) = str_field(c, "display") {
            emit(IndexValue::string(d));
        }
    };
    match shape {
        "CodeableConcept" => {
            if let Some(t) = str_field(obj, "text") {
                emit(IndexValue::string(t));
            }
            for c in obj
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                display(c, emit);
            }
        }
        "Coding" => display(obj, emit),
        _ => {
            if let Some(t) = obj
                .get("type")
                .and_then(Value::as_object)
                .and_then(|t| str_field(t, "text"))
            {
                emit(IndexValue::string(t));
            }
        }
    }
}

fn coding(obj: &Map<String, Value>, emit: &mut dyn FnMut(IndexValue)) {
    if let Some(code) = str_field(obj, "code") {
        emit(IndexValue::token(str_field(obj, "system"), code));
    }
}

/// A `Reference`: its `reference`, and its logical `identifier` as a token of the same parameter (kept with the
/// tokens, searched by the `:identifier` modifier: a DMP document's author is often named only by an IDNPS).
fn reference_object(obj: &Map<String, Value>, emit: &mut dyn FnMut(IndexValue)) {
    if let Some(r) = str_field(obj, "reference") {
        emit(parse_reference(r));
    }
    if let Some(id) = obj.get("identifier").and_then(Value::as_object)
        && let Some(value) = str_field(id, "value")
    {
        emit(IndexValue::token(str_field(id, "system"), value));
    }
}

/// Interprets a `Reference.reference`: `Type/id[/_history/v]` → type and id; an absolute URL ending in
/// `Type/id[/_history/v]` → type, id and the URL; `#contained`, `urn:…`, conditional and unrecognised
/// references → URL only.
pub(crate) fn parse_reference(r: &str) -> IndexValue {
    let url_only = || IndexValue::Reference {
        target_type: None,
        target_id: None,
        url: Some(r.to_string()),
    };
    if r.starts_with('#') || r.starts_with("urn:") || r.contains('?') {
        return url_only();
    }
    let absolute = r.contains("://");
    let mut segs: Vec<&str> = r.split('/').collect();
    if segs.len() >= 4 && segs[segs.len() - 2] == "_history" {
        segs.truncate(segs.len() - 2);
    }
    if segs.len() < 2 || (!absolute && segs.len() != 2) {
        return url_only();
    }
    let (t, id) = (segs[segs.len() - 2], segs[segs.len() - 1]);
    if !is_resource_type(t) || !crate::resource::is_valid_id(id) {
        return url_only();
    }
    IndexValue::Reference {
        target_type: Some(t.to_string()),
        target_id: Some(id.to_string()),
        url: absolute.then(|| r.to_string()),
    }
}

fn date_object(obj: &Map<String, Value>, ty: Option<&str>, emit: &mut dyn FnMut(IndexValue)) {
    let is_period = ty == Some("Period")
        || (ty.is_none_or(|t| t != "Timing")
            && (obj.contains_key("start") || obj.contains_key("end")));
    if is_period {
        if let Some((lo, hi)) = period(obj) {
            emit(IndexValue::Date { lo, hi });
        }
        return;
    }
    if ty == Some("Timing") || obj.contains_key("event") || obj.contains_key("repeat") {
        // R4: only the outer limits of a Timing matter (its events and its repeat.boundsPeriod).
        let mut range: Option<(i64, i64)> = None;
        let mut widen = |lo: i64, hi: i64| {
            range = Some(match range {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            })
        };
        if let Some(events) = obj.get("event").and_then(Value::as_array) {
            for (lo, hi) in events
                .iter()
                .filter_map(Value::as_str)
                .filter_map(parse_date_range)
            {
                widen(lo, hi);
            }
        }
        if let Some((lo, hi)) = obj
            .get("repeat")
            .and_then(|r| r.get("boundsPeriod"))
            .and_then(Value::as_object)
            .and_then(period)
        {
            widen(lo, hi);
        }
        if let Some((lo, hi)) = range {
            emit(IndexValue::Date { lo, hi });
        }
    }
}

/// A Period's range: from the start of `start` (open if absent) to the end of `end` (open if absent). `None`
/// when both are absent or one is malformed.
fn period(obj: &Map<String, Value>) -> Option<(i64, i64)> {
    let start = obj
        .get("start")
        .map(|v| v.as_str().and_then(parse_date_range));
    let end = obj
        .get("end")
        .map(|v| v.as_str().and_then(parse_date_range));
    let lo = match start {
        None => i64::MIN,
        Some(r) => r?.0,
    };
    let hi = match end {
        None => i64::MAX,
        Some(r) => r?.1,
    };
    if start.is_none() && end.is_none() {
        return None;
    }
    Some((lo.min(hi), hi.max(lo)))
}

fn number_value(
    kind: ParamType,
    text: &str,
    q: Option<&Map<String, Value>>,
    emit: &mut dyn FnMut(IndexValue),
) {
    let Some((value, lo, hi)) = number_range(text) else {
        return;
    };
    if kind == ParamType::Number {
        emit(IndexValue::Number { value, lo, hi });
        return;
    }
    let field = |k: &str| q.and_then(|q| str_field(q, k)).map(str::to_string);
    let (system, code, unit) = match q.and_then(|q| str_field(q, "currency")) {
        Some(currency) => (
            Some("urn:iso:std:iso:4217".to_string()),
            Some(currency.to_string()),
            None,
        ),
        None => (field("system"), field("code"), field("unit")),
    };
    emit(IndexValue::Quantity {
        value,
        lo,
        hi,
        system,
        code,
        unit,
    });
}

fn number_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn quantity_object(obj: &Map<String, Value>, ty: Option<&str>, emit: &mut dyn FnMut(IndexValue)) {
    if ty == Some("Range")
        || (ty.is_none() && (obj.contains_key("low") || obj.contains_key("high")))
    {
        range(obj, emit);
        return;
    }
    if matches!(ty, Some("SampledData" | "Ratio")) {
        return;
    }
    if let Some(text) = obj.get("value").and_then(number_text) {
        number_value(ParamType::Quantity, &text, Some(obj), emit);
    }
}

/// A Range as a quantity: `lo` is the low bound's, `hi` the high bound's (open ends are infinite), `value`
/// the middle (or the only finite bound); the unit is the low bound's, else the high bound's.
fn range(obj: &Map<String, Value>, emit: &mut dyn FnMut(IndexValue)) {
    let bound = |k: &str| {
        let q = obj.get(k)?.as_object()?;
        let (v, lo, hi) = number_range(&number_text(q.get("value")?)?)?;
        Some((q, v, lo, hi))
    };
    let (low, high) = (bound("low"), bound("high"));
    let (value, lo, hi, q) = match (&low, &high) {
        (Some(l), Some(h)) => ((l.1 + h.1) / 2.0, l.2, h.3, l.0),
        (Some(l), None) => (l.1, l.2, f64::INFINITY, l.0),
        (None, Some(h)) => (h.1, f64::NEG_INFINITY, h.3, h.0),
        (None, None) => return,
    };
    let field = |k: &str| str_field(q, k).map(str::to_string);
    emit(IndexValue::Quantity {
        value,
        lo,
        hi,
        system: field("system"),
        code: field("code"),
        unit: field("unit"),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(kind: ParamType, json: &Value, ty: Option<&'static str>) -> Vec<IndexValue> {
        let mut out = Vec::new();
        convert(
            kind,
            &Item::Node {
                json,
                fhir_type: ty,
                ext: None,
            },
            &mut |v| out.push(v),
        );
        out
    }

    fn s(exact: &str) -> IndexValue {
        IndexValue::string(exact)
    }

    fn tok(system: Option<&str>, code: &str) -> IndexValue {
        IndexValue::token(system, code)
    }

    fn rf(t: Option<&str>, id: Option<&str>, url: Option<&str>) -> IndexValue {
        IndexValue::Reference {
            target_type: t.map(Into::into),
            target_id: id.map(Into::into),
            url: url.map(Into::into),
        }
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_string("Chalmers"), "chalmers");
        assert_eq!(
            normalize_string("Élodie Müller-Ñúñez"),
            "elodie muller-nunez"
        );
        assert_eq!(normalize_string("ÅSTRÖM"), "astrom");
        assert_eq!(normalize_string("Straße"), "straße");
        // Capped, on a character boundary.
        let long = "é".repeat(MAX_NORM_BYTES);
        let n = normalize_string(&long);
        assert_eq!(n, "e".repeat(MAX_NORM_BYTES));
        let n = normalize_string(&format!("a{}", "ß".repeat(MAX_NORM_BYTES)));
        assert_eq!(
            (n.len(), n.chars().filter(|c| *c == 'ß').count()),
            (MAX_NORM_BYTES - 1, MAX_NORM_BYTES / 2 - 1)
        );
        assert_eq!(
            s("Zoë"),
            IndexValue::String {
                norm: "zoe".into(),
                exact: "Zoë".into()
            }
        );
    }

    #[test]
    fn strings() {
        let name = json!({"use": "official", "family": "Chalmers", "given": ["Peter", "James"], "prefix": ["Mr"], "text": "Peter Chalmers"});
        let expected = vec![
            s("Chalmers"),
            s("Peter"),
            s("James"),
            s("Mr"),
            s("Peter Chalmers"),
        ];
        assert_eq!(conv(ParamType::String, &name, Some("HumanName")), expected);
        assert_eq!(conv(ParamType::String, &name, None), expected);
        let addr = json!({"use": "home", "line": ["534 Erewhon St", "Apt 2"], "city": "PleasantVille", "district": "Rainbow", "state": "Vic", "postalCode": "3999", "country": "AU", "period": {"start": "1974-12-25"}});
        assert_eq!(
            conv(ParamType::String, &addr, Some("Address")),
            vec![
                s("534 Erewhon St"),
                s("Apt 2"),
                s("PleasantVille"),
                s("Rainbow"),
                s("Vic"),
                s("3999"),
                s("AU")
            ]
        );
        assert_eq!(conv(ParamType::String, &addr, None).len(), 7);
        assert_eq!(
            conv(ParamType::String, &json!("Acme"), Some("string")),
            vec![s("Acme")]
        );
        assert_eq!(conv(ParamType::String, &json!(""), Some("string")), vec![]);
        assert_eq!(
            conv(ParamType::String, &json!({"text": "just text"}), None),
            vec![s("just text")]
        );
        let mut out = Vec::new();
        convert(ParamType::String, &Item::String("x".into()), &mut |v| {
            out.push(v)
        });
        assert_eq!(out, vec![s("x")]);
    }

    #[test]
    fn tokens() {
        let cc = json!({"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}, {"system": "http://snomed.info/sct", "code": "27113001"}, {"display": "no code"}], "text": "Body weight"});
        let expected = vec![
            tok(Some("http://loinc.org"), "29463-7"),
            tok(Some("http://snomed.info/sct"), "27113001"),
        ];
        assert_eq!(
            conv(ParamType::Token, &cc, Some("CodeableConcept")),
            expected
        );
        assert_eq!(conv(ParamType::Token, &cc, None), expected);
        assert_eq!(
            conv(
                ParamType::Token,
                &json!({"text": "only text"}),
                Some("CodeableConcept")
            ),
            vec![]
        );
        assert_eq!(
            conv(ParamType::Token, &json!({"code": "x"}), Some("Coding")),
            vec![tok(None, "x")]
        );
        let id =
            json!({"use": "usual", "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"});
        assert_eq!(
            conv(ParamType::Token, &id, Some("Identifier")),
            vec![tok(Some("urn:oid:1.2.36.146.595.217.0.1"), "12345")]
        );
        assert_eq!(
            conv(ParamType::Token, &id, None),
            vec![tok(Some("urn:oid:1.2.36.146.595.217.0.1"), "12345")]
        );
        let cp = json!({"system": "phone", "value": "(03) 5555 6473", "use": "work"});
        assert_eq!(
            conv(ParamType::Token, &cp, Some("ContactPoint")),
            vec![tok(None, "(03) 5555 6473")]
        );
        assert_eq!(
            conv(ParamType::Token, &cp, None),
            vec![tok(None, "(03) 5555 6473")]
        );
        assert_eq!(
            conv(ParamType::Token, &json!("male"), Some("code")),
            vec![tok(None, "male")]
        );
        assert_eq!(
            conv(ParamType::Token, &json!(true), Some("boolean")),
            vec![tok(None, "true")]
        );
        let mut out = Vec::new();
        convert(ParamType::Token, &Item::Boolean(false), &mut |v| {
            out.push(v)
        });
        assert_eq!(out, vec![tok(None, "false")]);
        assert_eq!(conv(ParamType::Token, &json!({"foo": 1}), None), vec![]);
    }

    #[test]
    fn references() {
        let r = |s: &str| {
            conv(
                ParamType::Reference,
                &json!({"reference": s, "display": "x"}),
                Some("Reference"),
            )
        };
        assert_eq!(
            r("Patient/example"),
            vec![rf(Some("Patient"), Some("example"), None)]
        );
        assert_eq!(
            r("Patient/example/_history/2"),
            vec![rf(Some("Patient"), Some("example"), None)]
        );
        assert_eq!(
            r("http://example.org/fhir/Patient/123"),
            vec![rf(
                Some("Patient"),
                Some("123"),
                Some("http://example.org/fhir/Patient/123")
            )]
        );
        assert_eq!(
            r("https://x.org/Observation/a.b/_history/1"),
            vec![rf(
                Some("Observation"),
                Some("a.b"),
                Some("https://x.org/Observation/a.b/_history/1")
            )]
        );
        assert_eq!(r("#p1"), vec![rf(None, None, Some("#p1"))]);
        assert_eq!(
            r("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
            vec![rf(
                None,
                None,
                Some("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a")
            )]
        );
        assert_eq!(
            r("Patient?identifier=x|1"),
            vec![rf(None, None, Some("Patient?identifier=x|1"))]
        );
        assert_eq!(r("Foo/1"), vec![rf(None, None, Some("Foo/1"))]);
        assert_eq!(
            r("Patient/bad_id!"),
            vec![rf(None, None, Some("Patient/bad_id!"))]
        );
        assert_eq!(
            r("http://example.org/nothing"),
            vec![rf(None, None, Some("http://example.org/nothing"))]
        );
        // A logical reference: its identifier, as a token (searched with `:identifier`).
        assert_eq!(
            conv(
                ParamType::Reference,
                &json!({"identifier": {"value": "1"}}),
                Some("Reference")
            ),
            vec![IndexValue::token(None, "1")]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                &json!({"reference": "Patient/p", "identifier": {"system": "s", "value": "1"}}),
                Some("Reference")
            ),
            vec![
                rf(Some("Patient"), Some("p"), None),
                IndexValue::token(Some("s"), "1")
            ]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                &json!({"identifier": {"system": "s"}}),
                Some("Reference")
            ),
            vec![]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                &json!("http://hl7.org/fhir/ValueSet/x|4.0.1"),
                Some("canonical")
            ),
            // The version is dropped; the URL names ValueSet/x, so the reference is indexed both ways.
            vec![rf(
                Some("ValueSet"),
                Some("x"),
                Some("http://hl7.org/fhir/ValueSet/x")
            )]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                &json!("Library/lib-1"),
                Some("canonical")
            ),
            vec![rf(Some("Library"), Some("lib-1"), Some("Library/lib-1"))]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                &json!("http://example.org/cs|2"),
                Some("canonical")
            ),
            vec![rf(None, None, Some("http://example.org/cs"))]
        );
    }

    #[test]
    fn dates() {
        let d = |s: &str| parse_date_range(s).unwrap();
        assert_eq!(
            conv(ParamType::Date, &json!("1974-12-25"), Some("date")),
            vec![IndexValue::date(d("1974-12-25").0, d("1974-12-25").1)]
        );
        assert_eq!(
            conv(ParamType::Date, &json!("1974-12-32"), Some("date")),
            vec![]
        );
        let p = json!({"start": "2013-01-01", "end": "2013-06"});
        assert_eq!(
            conv(ParamType::Date, &p, Some("Period")),
            vec![IndexValue::date(d("2013").0, d("2013-06").1)]
        );
        assert_eq!(
            conv(ParamType::Date, &p, None),
            vec![IndexValue::date(d("2013").0, d("2013-06").1)]
        );
        assert_eq!(
            conv(ParamType::Date, &json!({"start": "2013"}), Some("Period")),
            vec![IndexValue::date(d("2013").0, i64::MAX)]
        );
        assert_eq!(
            conv(ParamType::Date, &json!({"end": "2013"}), Some("Period")),
            vec![IndexValue::date(i64::MIN, d("2013").1)]
        );
        assert_eq!(
            conv(
                ParamType::Date,
                &json!({"start": "garbage"}),
                Some("Period")
            ),
            vec![]
        );
        assert_eq!(
            conv(ParamType::Date, &json!({"id": "x"}), Some("Period")),
            vec![]
        );
        let t = json!({"event": ["2013-01-14", "2012-06-01T10:00:00Z"], "repeat": {"boundsPeriod": {"end": "2013-02-01"}}});
        assert_eq!(
            conv(ParamType::Date, &t, Some("Timing")),
            vec![IndexValue::date(i64::MIN, d("2013-02-01").1)]
        );
        let t = json!({"event": ["2013-01-14", "2012-06-01T10:00:00Z"]});
        assert_eq!(
            conv(ParamType::Date, &t, None),
            vec![IndexValue::date(
                d("2012-06-01T10:00:00Z").0,
                d("2013-01-14").1
            )]
        );
        assert_eq!(
            conv(
                ParamType::Date,
                &json!({"repeat": {"frequency": 1}}),
                Some("Timing")
            ),
            vec![]
        );
        assert_eq!(
            conv(
                ParamType::Date,
                &json!({"value": 3, "unit": "a"}),
                Some("Age")
            ),
            vec![]
        );
    }

    #[test]
    fn numbers_and_quantities() {
        let n: Value = serde_json::from_str("1.50").unwrap();
        assert_eq!(
            conv(ParamType::Number, &n, Some("decimal")),
            vec![IndexValue::Number {
                value: 1.5,
                lo: 1.495,
                hi: 1.505
            }]
        );
        let n: Value = serde_json::from_str("100").unwrap();
        assert_eq!(
            conv(ParamType::Number, &n, Some("integer")),
            vec![IndexValue::Number {
                value: 100.0,
                lo: 99.5,
                hi: 100.5
            }]
        );
        let q: Value = serde_json::from_str(r#"{"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}"#).unwrap();
        let expected = IndexValue::Quantity {
            value: 185.0,
            lo: 184.5,
            hi: 185.5,
            system: Some("http://unitsofmeasure.org".into()),
            code: Some("[lb_av]".into()),
            unit: Some("lbs".into()),
        };
        assert_eq!(
            conv(ParamType::Quantity, &q, Some("Quantity")),
            vec![expected.clone()]
        );
        assert_eq!(conv(ParamType::Quantity, &q, None), vec![expected]);
        let m: Value = serde_json::from_str(r#"{"value": 12.5, "currency": "EUR"}"#).unwrap();
        assert_eq!(
            conv(ParamType::Quantity, &m, Some("Money")),
            vec![IndexValue::Quantity {
                value: 12.5,
                lo: 12.45,
                hi: 12.55,
                system: Some("urn:iso:std:iso:4217".into()),
                code: Some("EUR".into()),
                unit: None
            }]
        );
        assert_eq!(
            conv(
                ParamType::Quantity,
                &json!({"unit": "mg"}),
                Some("Quantity")
            ),
            vec![]
        );
        let r: Value = serde_json::from_str(
            r#"{"low": {"value": 2, "unit": "a"}, "high": {"value": 4, "unit": "a"}}"#,
        )
        .unwrap();
        assert_eq!(
            conv(ParamType::Quantity, &r, Some("Range")),
            vec![IndexValue::Quantity {
                value: 3.0,
                lo: 1.5,
                hi: 4.5,
                system: None,
                code: None,
                unit: Some("a".into())
            }]
        );
        let mut out = Vec::new();
        convert(ParamType::Number, &Item::Integer(3), &mut |v| out.push(v));
        assert_eq!(
            out,
            vec![IndexValue::Number {
                value: 3.0,
                lo: 2.5,
                hi: 3.5
            }]
        );
    }

    #[test]
    fn extensions_index_their_value() {
        let ext = json!({"url": "http://x/ext", "valueCodeableConcept": {"coding": [{"system": "http://s", "code": "c"}]}});
        assert_eq!(
            conv(ParamType::Token, &ext, Some("Extension")),
            vec![tok(Some("http://s"), "c")]
        );
        assert_eq!(
            conv(ParamType::Token, &ext, None),
            vec![tok(Some("http://s"), "c")]
        );
        let ext = json!({"url": "http://x/ext", "valueDateTime": "2013"});
        let (lo, hi) = parse_date_range("2013").unwrap();
        assert_eq!(
            conv(ParamType::Date, &ext, Some("Extension")),
            vec![IndexValue::date(lo, hi)]
        );
        let ext = json!({"url": "http://x/ext", "valueReference": {"reference": "Patient/1"}});
        assert_eq!(
            conv(ParamType::Reference, &ext, Some("Extension")),
            vec![rf(Some("Patient"), Some("1"), None)]
        );
        assert_eq!(
            conv(
                ParamType::String,
                &json!({"url": "http://x/ext", "extension": []}),
                Some("Extension")
            ),
            vec![]
        );
    }

    #[test]
    fn uris() {
        assert_eq!(
            conv(ParamType::Uri, &json!("http://acme.org/x"), Some("uri")),
            vec![IndexValue::Uri("http://acme.org/x".into())]
        );
        assert_eq!(conv(ParamType::Uri, &json!({"a": 1}), None), vec![]);
    }
}
