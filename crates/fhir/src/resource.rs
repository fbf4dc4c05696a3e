//! What makes a JSON document a storable FHIR resource: its type, its id, its `meta`.

use std::fmt::Write as _;

use serde_json::Value;

/// Why a JSON body is not an acceptable resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("le corps n'est pas un objet JSON")]
    NotAnObject,
    #[error("l'élément resourceType est absent")]
    MissingResourceType,
    #[error("type de ressource inconnu : {0}")]
    UnknownType(String),
    #[error("resourceType {found} ne correspond pas au type {expected} de l'URL")]
    TypeMismatch { expected: String, found: String },
    #[error("identifiant invalide : {0:?} (1 à 64 caractères parmi A-Z a-z 0-9 - .)")]
    InvalidId(String),
    #[error("l'id {found:?} du corps ne correspond pas à l'id {expected:?} de l'URL")]
    IdMismatch { expected: String, found: String },
    #[error("l'élément {0} est invalide : {1}")]
    InvalidElement(String, String),
}

/// FHIR R4 id rule: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The resource type of a JSON resource, checked against the registry.
pub fn resource_type(resource: &Value) -> Result<&str, ResourceError> {
    let obj = resource.as_object().ok_or(ResourceError::NotAnObject)?;
    let rt = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or(ResourceError::MissingResourceType)?;
    if !crate::search_params::is_resource_type(rt) {
        return Err(ResourceError::UnknownType(rt.to_string()));
    }
    Ok(rt)
}

/// Basic structural checks every stored resource passes: an object, a known type, a valid id if present,
/// a `meta` that is an object, no `null` values anywhere (FHIR JSON forbids them) and no empty arrays; and the
/// checks of its first level against the type's definition ([`crate::elements::check`]).
pub fn check_structure(resource: &Value) -> Result<(), ResourceError> {
    resource_type(resource)?;
    if let Some(id) = resource.get("id") {
        match id.as_str() {
            Some(s) if is_valid_id(s) => {}
            _ => return Err(ResourceError::InvalidId(id.to_string())),
        }
    }
    if resource.get("meta").is_some_and(|m| !m.is_object()) {
        return Err(ResourceError::InvalidElement(
            "meta".into(),
            "doit être un objet".into(),
        ));
    }
    let rt = resource_type(resource)?;
    check_no_nulls(resource, &mut String::from(rt), 0)?;
    if let Some(m) = resource.as_object() {
        crate::elements::check(rt, m).map_err(|(key, problem)| {
            ResourceError::InvalidElement(format!("{rt}.{key}"), problem)
        })?;
    }
    Ok(())
}

fn check_no_nulls(v: &Value, path: &mut String, depth: usize) -> Result<(), ResourceError> {
    if depth > 128 {
        return Err(ResourceError::InvalidElement(
            path.clone(),
            "imbrication trop profonde".into(),
        ));
    }
    match v {
        Value::Null => Err(ResourceError::InvalidElement(
            path.clone(),
            "null n'est pas permis en FHIR JSON".into(),
        )),
        Value::Object(m) => {
            for (k, child) in m {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                // A repeating primitive and its extensions (`given`, `_given`) keep their positions aligned
                // with nulls: an item may be null where the other array has something at that position.
                let allow_null_at = |i: usize| {
                    match k.strip_prefix('_') {
                        Some(name) => m.get(name),
                        None => m.get(&format!("_{k}")),
                    }
                    .and_then(Value::as_array)
                    .and_then(|t| t.get(i))
                    .is_some_and(|x| !x.is_null())
                };
                match child {
                    Value::Array(items) => {
                        if items.is_empty() {
                            return Err(ResourceError::InvalidElement(
                                path.clone(),
                                "tableau vide".into(),
                            ));
                        }
                        for (i, it) in items.iter().enumerate() {
                            if it.is_null() && allow_null_at(i) {
                                continue;
                            }
                            let len = path.len();
                            let _ = write!(path, "[{i}]");
                            check_no_nulls(it, path, depth + 1)?;
                            path.truncate(len);
                        }
                    }
                    _ => check_no_nulls(child, path, depth + 1)?,
                }
                path.truncate(len);
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                check_no_nulls(it, path, depth + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("example"));
        assert!(is_valid_id("a.b-C9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"x".repeat(65)));
    }

    #[test]
    fn nulls_rejected_but_aligned_extension_nulls_allowed() {
        let bad = serde_json::json!({"resourceType":"Patient","name":[{"family":null}]});
        assert!(check_structure(&bad).is_err());
        let ok = serde_json::json!({"resourceType":"Patient","name":[{"given":["a","b"],"_given":[null,{"id":"x"}]}]});
        assert!(check_structure(&ok).is_ok());
    }
}

/// FHIR JSON gives each property once (RFC 8259 leaves duplicates undefined; a parser keeps one of them, and
/// which one decides what is stored): the first property named twice in an object of `json`, as an error
/// naming it. `json` must already be valid JSON.
pub fn check_duplicate_keys(json: &[u8]) -> Result<(), String> {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    struct NoDup;
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = NoDup;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("une valeur JSON")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<NoDup, E> {
            Ok(NoDup)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<NoDup, E> {
            Ok(NoDup)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<NoDup, E> {
            Ok(NoDup)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<NoDup, E> {
            Ok(NoDup)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<NoDup, E> {
            Ok(NoDup)
        }
        fn visit_unit<E: de::Error>(self) -> Result<NoDup, E> {
            Ok(NoDup)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDup, A::Error> {
            while seq.next_element::<NoDup>()?.is_some() {}
            Ok(NoDup)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDup, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(de::Error::custom(format!(
                        "propriété « {k} » donnée deux fois"
                    )));
                }
                map.next_value::<NoDup>()?;
            }
            Ok(NoDup)
        }
    }
    impl<'de> Deserialize<'de> for NoDup {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NoDup, D::Error> {
            d.deserialize_any(V)
        }
    }
    let mut d = serde_json::Deserializer::from_slice(json);
    // serde_json's message ends with the line and column: kept, it says where.
    NoDup::deserialize(&mut d)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod duplicate_keys {
    use super::check_duplicate_keys;

    #[test]
    fn found_at_any_depth() {
        assert!(
            check_duplicate_keys(br#"{"a":1,"b":[{"c":1,"d":{"e":[1,2.5,"x",null,true]}}]}"#)
                .is_ok()
        );
        assert!(check_duplicate_keys(br#"{"v": 12345678901234567890.123456789}"#).is_ok());
        for bad in [
            r#"{"status":"final","status":"bogus"}"#,
            r#"{"a":[{"x":1},{"y":2,"y":3}]}"#,
            r#"{"a":{"b":{"c":1,"c":1}}}"#,
        ] {
            let e = check_duplicate_keys(bad.as_bytes()).unwrap_err();
            assert!(e.contains("deux fois"), "{bad} : {e}");
        }
    }
}
