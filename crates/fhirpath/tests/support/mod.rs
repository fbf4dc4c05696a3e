//! Test support: a small FHIR XML → FHIR JSON converter driven by the engine's element table.

use serde_json::{Map, Number, Value};
use socle_fhirpath::fhir_model;

const FHIR_NS: &str = "http://hl7.org/fhir";

/// Converts a FHIR XML resource document to FHIR JSON.
pub fn xml_to_json(text: &str) -> Result<Value, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    Ok(resource(root, text))
}

fn resource(node: roxmltree::Node<'_, '_>, text: &str) -> Value {
    let rt = node.tag_name().name().to_string();
    let mut obj = Map::new();
    obj.insert("resourceType".into(), Value::String(rt.clone()));
    fill(node, &rt, &mut obj, text);
    Value::Object(obj)
}

fn fhir_children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(|c| c.is_element())
}

/// Resolves the JSON key, type and cardinality of child element `name` of a `ty` node.
fn lookup(ty: &str, name: &str) -> (Option<&'static str>, bool) {
    if let Some(e) = fhir_model::element(ty, name)
        && !e.choice
    {
        return (e.types.first().copied(), e.repeats);
    }
    // choice element: valueQuantity → value[x] of type Quantity
    for i in (1..name.len()).rev() {
        if !name.is_char_boundary(i) {
            continue;
        }
        let (base, suffix) = name.split_at(i);
        if let Some(e) = fhir_model::element(ty, base)
            && e.choice
        {
            for t in e.types {
                let mut c = t.chars();
                if let Some(f) = c.next()
                    && suffix.starts_with(f.to_ascii_uppercase())
                    && &suffix[f.len_utf8()..] == c.as_str()
                {
                    return (Some(t), false);
                }
            }
        }
    }
    (None, false)
}

fn primitive_value(ty: &str, v: &str) -> Value {
    match fhir_model::primitive_system_type(ty) {
        Some("Boolean") => match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(v.to_string()),
        },
        Some("Integer" | "Decimal") => serde_json::from_str::<Number>(v)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(v.to_string())),
        _ => Value::String(v.to_string()),
    }
}

fn push(obj: &mut Map<String, Value>, key: &str, v: Value, repeats: bool) {
    if repeats {
        match obj
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(vec![]))
        {
            Value::Array(a) => a.push(v),
            other => *other = Value::Array(vec![v]),
        }
    } else {
        obj.insert(key.to_string(), v);
    }
}

fn fill(node: roxmltree::Node<'_, '_>, ty: &str, obj: &mut Map<String, Value>, text: &str) {
    for a in node.attributes() {
        if a.namespace().is_none() && (a.name() == "id" || a.name() == "url") {
            obj.insert(a.name().to_string(), Value::String(a.value().to_string()));
        }
    }
    // first pass: how many values of each primitive key, to align `_key` arrays
    for child in fhir_children(node) {
        let name = child.tag_name().name();
        if child.tag_name().namespace() != Some(FHIR_NS) {
            continue;
        }
        let (cty, repeats) = lookup(ty, name);
        let cty = cty.unwrap_or(if child.attribute("value").is_some() {
            "string"
        } else {
            "Element"
        });
        if name == "div" || cty == "xhtml" {
            let r = child.range();
            push(obj, name, Value::String(text[r].to_string()), repeats);
            continue;
        }
        if fhir_model::is_resource_type(cty) {
            if let Some(inner) = fhir_children(child).next() {
                push(obj, name, resource(inner, text), repeats);
            }
            continue;
        }
        if fhir_model::is_primitive(cty) {
            let value = child
                .attribute("value")
                .map(|v| primitive_value(cty, v))
                .unwrap_or(Value::Null);
            let mut ext = Map::new();
            fill(child, "Element", &mut ext, text);
            if repeats {
                let n = obj.get(name).and_then(Value::as_array).map_or(0, Vec::len);
                push(obj, name, value, true);
                let ukey = format!("_{name}");
                let has_ext = !ext.is_empty();
                let existing = obj.get(&ukey).is_some();
                if has_ext || existing {
                    let arr = obj.entry(ukey).or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(a) = arr {
                        while a.len() < n {
                            a.push(Value::Null);
                        }
                        a.push(if has_ext {
                            Value::Object(ext)
                        } else {
                            Value::Null
                        });
                    }
                }
            } else {
                if !value.is_null() {
                    obj.insert(name.to_string(), value);
                }
                if !ext.is_empty() {
                    obj.insert(format!("_{name}"), Value::Object(ext));
                }
            }
            continue;
        }
        let mut inner = Map::new();
        fill(child, cty, &mut inner, text);
        push(obj, name, Value::Object(inner), repeats);
    }
    // pad `_key` arrays to the value array length
    let keys: Vec<String> = obj.keys().filter(|k| k.starts_with('_')).cloned().collect();
    for k in keys {
        let n = obj.get(&k[1..]).and_then(Value::as_array).map(Vec::len);
        if let (Some(n), Some(Value::Array(a))) = (n, obj.get_mut(&k)) {
            while a.len() < n {
                a.push(Value::Null);
            }
        }
    }
}
