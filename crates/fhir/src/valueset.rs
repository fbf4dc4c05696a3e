//! The codes a `ValueSet` enumerates, for the `:in` and `:not-in` token search modifiers.
//!
//! Only what a value set states explicitly is expanded: its `expansion.contains` (nested entries included), or
//! else its `compose.include` entries listing their `concept`s, or naming a whole code system (`system` alone:
//! any code of it). Filters (`include.filter`), value sets imported by `include.valueSet` and the exclusion of
//! a whole system need a terminology server: such a value set is refused with the reason, never expanded
//! partially.

use serde_json::Value;

/// One member of an expansion: a code of a system, or every code of a system (`code` `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub system: Option<String>,
    pub code: Option<String>,
}

/// Why a value set cannot be expanded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotExpandable(pub String);

impl std::fmt::Display for NotExpandable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Nested `expansion.contains` deeper than this are refused (a hostile resource could nest without end).
const MAX_DEPTH: usize = 32;

/// The members `vs` enumerates, in order, without duplicates.
pub fn members(vs: &Value) -> Result<Vec<Member>, NotExpandable> {
    let mut out = Vec::new();
    if let Some(contains) = vs.pointer("/expansion/contains").and_then(Value::as_array) {
        from_contains(contains, 0, &mut out)?;
        return Ok(dedup(out));
    }
    let Some(compose) = vs.get("compose") else {
        return Err(NotExpandable(
            "ValueSet sans expansion ni composition (compose)".into(),
        ));
    };
    for inc in compose
        .get("include")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        refuse_unsupported(inc, "include")?;
        let system = inc
            .get("system")
            .and_then(Value::as_str)
            .map(str::to_string);
        match inc.get("concept").and_then(Value::as_array) {
            Some(concepts) => {
                for c in concepts {
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        out.push(Member {
                            system: system.clone(),
                            code: Some(code.to_string()),
                        });
                    }
                }
            }
            None if system.is_some() => out.push(Member { system, code: None }),
            None => {
                return Err(NotExpandable(
                    "compose.include sans system ni concept".into(),
                ));
            }
        }
    }
    for exc in compose
        .get("exclude")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        refuse_unsupported(exc, "exclude")?;
        let system = exc.get("system").and_then(Value::as_str);
        let Some(concepts) = exc.get("concept").and_then(Value::as_array) else {
            return Err(NotExpandable(
                "compose.exclude d'un système de codes entier : un serveur de terminologie est nécessaire".into(),
            ));
        };
        let gone: Vec<&str> = concepts
            .iter()
            .filter_map(|c| c.get("code").and_then(Value::as_str))
            .collect();
        // A code excluded from a whole system the value set includes cannot be expressed as a list.
        if out
            .iter()
            .any(|m| m.code.is_none() && m.system.as_deref() == system)
        {
            return Err(NotExpandable(
                "compose.exclude de codes d'un système inclus en entier : un serveur de terminologie est \
                 nécessaire"
                    .into(),
            ));
        }
        out.retain(|m| {
            !(m.system.as_deref() == system && m.code.as_deref().is_some_and(|c| gone.contains(&c)))
        });
    }
    Ok(dedup(out))
}

fn refuse_unsupported(part: &Value, name: &str) -> Result<(), NotExpandable> {
    if part
        .get("filter")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
    {
        return Err(NotExpandable(format!(
            "compose.{name}.filter : les filtres demandent un serveur de terminologie"
        )));
    }
    if part
        .get("valueSet")
        .and_then(Value::as_array)
        .is_some_and(|v| !v.is_empty())
    {
        return Err(NotExpandable(format!(
            "compose.{name}.valueSet : l'import d'autres ValueSet n'est pas pris en charge"
        )));
    }
    Ok(())
}

fn from_contains(list: &[Value], depth: usize, out: &mut Vec<Member>) -> Result<(), NotExpandable> {
    if depth > MAX_DEPTH {
        return Err(NotExpandable(format!(
            "expansion.contains imbriqué sur plus de {MAX_DEPTH} niveaux"
        )));
    }
    for c in list {
        // An abstract entry groups others and is not itself a member.
        let is_abstract = c.get("abstract").and_then(Value::as_bool) == Some(true);
        if let Some(code) = c.get("code").and_then(Value::as_str)
            && !is_abstract
        {
            out.push(Member {
                system: c.get("system").and_then(Value::as_str).map(str::to_string),
                code: Some(code.to_string()),
            });
        }
        if let Some(inner) = c.get("contains").and_then(Value::as_array) {
            from_contains(inner, depth + 1, out)?;
        }
    }
    Ok(())
}

fn dedup(v: Vec<Member>) -> Vec<Member> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|m| seen.insert(m.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(system: &str, code: Option<&str>) -> Member {
        Member {
            system: Some(system.into()),
            code: code.map(str::to_string),
        }
    }

    #[test]
    fn expansion_first_then_composition() {
        let vs = json!({"resourceType": "ValueSet",
            "compose": {"include": [{"system": "s", "concept": [{"code": "ignored"}]}]},
            "expansion": {"contains": [
                {"system": "a", "code": "1"},
                {"abstract": true, "code": "group", "system": "a", "contains": [
                    {"system": "a", "code": "2"}, {"system": "a", "code": "1"}]}]}});
        assert_eq!(
            members(&vs).unwrap(),
            vec![m("a", Some("1")), m("a", Some("2"))]
        );
        let vs = json!({"resourceType": "ValueSet", "compose": {
            "include": [{"system": "a", "concept": [{"code": "1"}, {"code": "2"}, {"code": "3"}]},
                        {"system": "b"}],
            "exclude": [{"system": "a", "concept": [{"code": "2"}]}]}});
        assert_eq!(
            members(&vs).unwrap(),
            vec![m("a", Some("1")), m("a", Some("3")), m("b", None)]
        );
    }

    #[test]
    fn what_needs_a_terminology_server_is_refused() {
        for (vs, word) in [
            (
                json!({"compose": {"include": [{"system": "a", "filter": [{"property": "concept", "op": "is-a", "value": "x"}]}]}}),
                "filter",
            ),
            (
                json!({"compose": {"include": [{"valueSet": ["http://x/vs"]}]}}),
                "valueSet",
            ),
            (
                json!({"compose": {"include": [{"system": "a"}], "exclude": [{"system": "a", "concept": [{"code": "1"}]}]}}),
                "entier",
            ),
            (
                json!({"compose": {"include": [{"system": "a", "concept": [{"code": "1"}]}], "exclude": [{"system": "a"}]}}),
                "entier",
            ),
            (json!({"resourceType": "ValueSet"}), "compose"),
        ] {
            let e = members(&vs).unwrap_err();
            assert!(e.0.contains(word), "{e}");
        }
        let mut deep = json!({"system": "a", "code": "x"});
        for _ in 0..40 {
            deep = json!({"abstract": true, "contains": [deep]});
        }
        assert!(members(&json!({"expansion": {"contains": [deep]}})).is_err());
    }
}
