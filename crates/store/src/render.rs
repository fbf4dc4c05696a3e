//! Bundles for search and history responses, written as bytes around the stored resource JSON (which is
//! never parsed again on the way out).

use serde_json::{Value, json};

use crate::repo::{HistoryPage, SearchPage, Stored, iso_instant, new_id};

fn query_string(params: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

fn link(relation: &str, url: String) -> Value {
    json!({"relation": relation, "url": url})
}

fn url_for(base: &str, path: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{}", query_string(params))
    }
}

fn push_json(out: &mut Vec<u8>, v: &Value) {
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// A `searchset` Bundle for a page of results of a search on `path` (`Patient`).
pub fn searchset(base: &str, path: &str, page: &SearchPage) -> Vec<u8> {
    let mut links = vec![link("self", url_for(base, path, &page.self_params))];
    if let Some(n) = &page.next {
        links.push(link("next", url_for(base, path, n)));
    }
    if let Some(p) = &page.prev {
        links.push(link("previous", url_for(base, path, p)));
    }
    let mut head = json!({"resourceType": "Bundle", "id": new_id(), "meta": {"lastUpdated": iso_instant(crate::now_ms())},
                          "type": "searchset"});
    if let Some(t) = page.total {
        head["total"] = json!(t);
    }
    head["link"] = Value::Array(links);
    let mut out = Vec::with_capacity(
        1024 + page
            .matches
            .iter()
            .map(|m| m.content.len() + 160)
            .sum::<usize>(),
    );
    push_json(&mut out, &head);
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"entry\":[");
    let mut first = true;
    let mut entry = |out: &mut Vec<u8>, s: &Stored, mode: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"fullUrl\":");
        push_json(out, &Value::String(format!("{base}/{}/{}", s.rtype, s.id)));
        out.extend_from_slice(b",\"resource\":");
        match shape(&s.content, page) {
            Some(v) => push_json(out, &v),
            None => out.extend_from_slice(&s.content),
        }
        out.extend_from_slice(b",\"search\":{\"mode\":\"");
        out.extend_from_slice(mode.as_bytes());
        out.extend_from_slice(b"\"}}");
    };
    for s in &page.matches {
        entry(&mut out, s, "match");
    }
    for s in &page.includes {
        entry(&mut out, s, "include");
    }
    if !page.warnings.is_empty() {
        let issues: Vec<Value> = page
            .warnings
            .iter()
            .map(|(code, w)| json!({"severity": "warning", "code": code.code(), "diagnostics": w}))
            .collect();
        let oo = json!({"resource": {"resourceType": "OperationOutcome", "id": new_id(), "issue": issues},
                        "search": {"mode": "outcome"}});
        if !first {
            out.push(b',');
        }
        first = false;
        push_json(&mut out, &oo);
    }
    if first {
        // No entry at all: drop `"entry":[` (FHIR forbids empty arrays).
        let cut = out.len() - b",\"entry\":[".len();
        out.truncate(cut);
        out.push(b'}');
    } else {
        out.extend_from_slice(b"]}");
    }
    out
}

/// Applies a search's `_summary` / `_elements` to a resource, or `None` when it is returned whole.
fn shape(content: &[u8], page: &SearchPage) -> Option<Value> {
    shape_resource(content, page.summary, page.elements.as_deref())
}

/// Applies `_summary` / `_elements` to a resource (tagged `SUBSETTED`), or `None` when it is returned whole.
pub fn shape_resource(
    content: &[u8],
    summary: Option<crate::search::Summary>,
    elements: Option<&[String]>,
) -> Option<Value> {
    use crate::search::Summary;
    let summary = summary.filter(|s| !matches!(s, Summary::False | Summary::Count));
    if summary.is_none() && elements.is_none() {
        return None;
    }
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(content) else {
        return None;
    };
    let rtype = m
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // The element a property stands for, per the type's definition (`socle_fhir::elements`).
    let element = |k: &str| socle_fhir::elements::element_of(&rtype, k);
    let always = |k: &str| matches!(k, "resourceType" | "id" | "meta");
    match summary {
        Some(Summary::Data) => {
            m.shift_remove("text");
        }
        // The narrative, and the mandatory elements (a resource without them would not be valid).
        Some(Summary::Text) => {
            m.retain(|k, _| always(k) || k == "text" || element(k).is_some_and(|e| e.mandatory))
        }
        // The elements marked summary in the base definition, and the modifiers (which change the meaning of
        // the rest: left out, they would mislead).
        Some(Summary::True) => {
            m.retain(|k, _| always(k) || element(k).is_some_and(|e| e.summary || e.modifier))
        }
        _ => {}
    }
    if let Some(els) = elements {
        // What was asked, and the mandatory and modifier elements (FHIR: servers SHOULD return mandatory
        // elements; a modifier changes the meaning of what is returned).
        m.retain(|k, _| {
            always(k)
                || els
                    .iter()
                    .any(|e| socle_fhir::elements::property_is(&rtype, k, e) || e == k)
                || element(k).is_some_and(|e| e.mandatory || e.modifier)
        });
    }
    let meta = m.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        let tag = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"});
        match meta.get_mut("tag") {
            Some(Value::Array(a)) => a.push(tag),
            _ => {
                meta.insert("tag".into(), json!([tag]));
            }
        }
    }
    Some(Value::Object(m))
}

/// A `history` Bundle.
pub fn history(base: &str, path: &str, page: &HistoryPage) -> Vec<u8> {
    let mut links = vec![link("self", url_for(base, path, &page.self_params))];
    if let Some(n) = &page.next {
        links.push(link("next", url_for(base, path, n)));
    }
    let head = json!({"resourceType": "Bundle", "id": new_id(), "meta": {"lastUpdated": iso_instant(crate::now_ms())},
                      "type": "history", "link": links});
    let mut out = Vec::new();
    push_json(&mut out, &head);
    if page.entries.is_empty() {
        return out;
    }
    out.pop();
    out.extend_from_slice(b",\"entry\":[");
    for (i, s) in page.entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (method, url, status) = match s.method.as_str() {
            // A creation by PUT (recorded so since session 30), or after a deletion (before: a POST would
            // have made another id).
            crate::repo::PUT_CREATE => ("PUT", format!("{}/{}", s.rtype, s.id), "201 Created"),
            "create" if s.version > 1 => ("PUT", format!("{}/{}", s.rtype, s.id), "201 Created"),
            "create" => ("POST", s.rtype.clone(), "201 Created"),
            "delete" => ("DELETE", format!("{}/{}", s.rtype, s.id), "204 No Content"),
            _ => ("PUT", format!("{}/{}", s.rtype, s.id), "200 OK"),
        };
        out.extend_from_slice(b"{\"fullUrl\":");
        push_json(
            &mut out,
            &Value::String(format!("{base}/{}/{}", s.rtype, s.id)),
        );
        if !s.is_deleted() {
            out.extend_from_slice(b",\"resource\":");
            out.extend_from_slice(&s.content);
        }
        out.extend_from_slice(b",\"request\":");
        push_json(&mut out, &json!({"method": method, "url": url}));
        out.extend_from_slice(b",\"response\":");
        push_json(
            &mut out,
            &json!({"status": status, "etag": format!("W/\"{}\"", s.version), "lastModified": s.last_updated_iso()}),
        );
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}
