//! `batch` and `transaction` Bundles (FHIR R4 §3.1.0.11): transactions are all-or-nothing in one database
//! transaction, with `urn:uuid:` and conditional references resolved; batches process each entry on its own.

use std::collections::HashMap;

use crate::sql::SqlConn;
use serde_json::{Value, json};

use crate::repo::{
    Prepared, RepoError, Repository, RequestContext, Stored, TxState, WriteOutcome, new_id,
    response_json,
};

/// Hard limit on entries in one Bundle.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Delete,
    Post,
    Put,
    Get,
}

struct Entry {
    index: usize,
    method: Method,
    /// The URL relative to the base: `Patient`, `Patient/1`, `Patient?x=y`.
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

/// Splits a relative request URL into path segments and decoded query parameters.
pub fn split_url(url: &str) -> (Vec<String>, Vec<(String, String)>) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let segs = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let params = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    (segs, params)
}

/// The entries of a batch or transaction Bundle; their resources are moved out of `bundle`, not copied.
/// The Bundle's type (`true`: transaction) and its entries, each read or refused on its own (a transaction
/// fails with its first refused entry; a batch answers each).
fn parse_entries(
    bundle: &mut Value,
    base: &str,
) -> Result<(bool, Vec<Result<Entry, RepoError>>), RepoError> {
    let bad = |m: String| RepoError::Invalid(m);
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(bad("le corps doit être une ressource Bundle".into()));
    }
    let is_tx = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch") => false,
        Some(t) => {
            return Err(bad(format!(
                "Bundle de type {t} : seuls batch et transaction sont traités ici"
            )));
        }
        None => return Err(bad("Bundle.type absent".into())),
    };
    let mut empty = Vec::new();
    let raw = match bundle.get_mut("entry") {
        None => &mut empty,
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("Bundle.entry doit être un tableau".into())),
    };
    if raw.len() > MAX_ENTRIES {
        return Err(bad(format!(
            "{} entrées : au plus {MAX_ENTRIES} par Bundle",
            raw.len()
        )));
    }
    let mut entries = Vec::with_capacity(raw.len());
    for (index, e) in raw.iter_mut().enumerate() {
        entries.push(parse_entry(index, e, base));
    }
    Ok((is_tx, entries))
}

fn parse_entry(index: usize, e: &mut Value, base: &str) -> Result<Entry, RepoError> {
    {
        let at = |m: &str| RepoError::InEntry {
            index,
            error: Box::new(RepoError::Invalid(m.to_string())),
        };
        let req = e
            .get("request")
            .ok_or_else(|| at("Bundle.entry.request absent"))?;
        let method = match req.get("method").and_then(Value::as_str) {
            Some("GET") | Some("HEAD") => Method::Get,
            Some("POST") => Method::Post,
            Some("PUT") => Method::Put,
            Some("DELETE") => Method::Delete,
            Some("PATCH") => return Err(at("PATCH n'est pas pris en charge dans les Bundles")),
            Some(m) => return Err(at(&format!("méthode inconnue : {m}"))),
            None => return Err(at("request.method absent")),
        };
        let url = relative_url(
            req.get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| at("request.url absent"))?,
            base,
        );
        // Some senders write the whole `Type?criteria`; the query part is what counts.
        let if_none_exist = req
            .get("ifNoneExist")
            .and_then(Value::as_str)
            .map(|q| q.split_once('?').map_or(q, |(_, c)| c).to_string());
        let if_match = match req.get("ifMatch").and_then(Value::as_str) {
            Some(s) => Some(parse_etag(s).ok_or_else(|| at("ifMatch invalide (attendu W/\"n\")"))?),
            None => None,
        };
        let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
        let resource = e.get_mut("resource").map(Value::take);
        if matches!(method, Method::Post | Method::Put) && resource.is_none() {
            return Err(at("entry.resource absent pour POST/PUT"));
        }
        Ok(Entry {
            index,
            method,
            url,
            full_url,
            resource,
            if_none_exist,
            if_match,
        })
    }
}

/// A request URL relative to the base: our own base is stripped, and an absolute URL of another server is
/// reduced to its `Type/…` part (the resource it names), so that Bundles exported elsewhere load here.
pub fn relative_url(url: &str, base: &str) -> String {
    if let Some(rest) = url.strip_prefix(base) {
        return rest.trim_start_matches('/').to_string();
    }
    if url.contains("://") {
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        };
        let segs: Vec<&str> = path.split('/').collect();
        if let Some(pos) = segs
            .iter()
            .rposition(|s| socle_fhir::search_params::is_resource_type(s))
        {
            let mut rel = segs[pos..].join("/");
            if let Some(q) = query {
                rel.push('?');
                rel.push_str(q);
            }
            return rel;
        }
    }
    url.to_string()
}

/// `If-Match: *`: the resource must exist (any version).
pub const MUST_EXIST: i64 = -1;
/// `If-None-Match: *` on a write: the resource must not exist (or be deleted) — a create that never overwrites.
pub const MUST_NOT_EXIST: i64 = 0;

/// An `If-Match` value: `W/"3"` or `3` → 3 (versions start at 1), `*` → [`MUST_EXIST`].
pub fn parse_etag(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "*" {
        return Some(MUST_EXIST);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"').parse().ok().filter(|&v: &i64| v >= 1)
}

pub(crate) fn process(
    repo: &Repository,
    ctx: &RequestContext,
    mut bundle: Value,
    hook: Option<TxHook<'_>>,
) -> Result<Value, RepoError> {
    let base = ctx.base_url.trim_end_matches('/').to_string();
    let (is_tx, entries) = parse_entries(&mut bundle, &base)?;
    if is_tx {
        let entries = entries.into_iter().collect::<Result<Vec<_>, _>>()?;
        transaction(repo, ctx, &base, entries, hook)
    } else if hook.is_some() {
        Err(RepoError::Invalid(
            "un Bundle de type transaction est attendu".into(),
        ))
    } else {
        Ok(batch(repo, ctx, &base, entries))
    }
}

/// Work a service adds to a transaction Bundle, run inside its database transaction after the entries (an error
/// rolls the whole transaction back). It receives the response entries, in the Bundle's order, and may query and
/// write through the [`TxView`]. It may run more than once when the database asks for a retry.
pub type TxHook<'a> = &'a mut dyn FnMut(&mut TxView<'_>, &[Value]) -> Result<(), RepoError>;

/// The transaction a [`TxHook`] runs in.
pub struct TxView<'a> {
    c: &'a mut dyn SqlConn,
    st: &'a mut TxState,
}

impl TxView<'_> {
    /// The connection, inside the transaction.
    pub fn conn(&mut self) -> &mut dyn SqlConn {
        self.c
    }

    /// Ids of the current resources of `rtype` matching `criteria`, the transaction's own writes included
    /// (at most two: enough to tell none, one and several).
    pub fn match_ids(
        &mut self,
        rtype: &str,
        criteria: &[(String, String)],
    ) -> Result<Vec<String>, RepoError> {
        self.st.match_ids(self.c, rtype, criteria)
    }
}

fn status_text(code: u16) -> String {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        422 => "Unprocessable Entity",
        _ => "",
    };
    format!("{code} {reason}").trim().to_string()
}

fn outcome_of(e: &RepoError) -> Value {
    let code = match e.status() {
        404 => "not-found",
        409 | 412 => "conflict",
        410 => "deleted",
        422 => "processing",
        500 | 503 => "exception",
        _ => "invalid",
    };
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": e.to_string()}]})
}

fn batch(
    repo: &Repository,
    ctx: &RequestContext,
    base: &str,
    entries: Vec<Result<Entry, RepoError>>,
) -> Value {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        // An entry that could not be read is answered like one that failed.
        let r = e
            .and_then(|e| one_batch_entry(repo, ctx, base, &e))
            .map_err(|err| match err {
                RepoError::InEntry { error, .. } => *error,
                other => other,
            });
        out.push(match r {
            Ok(v) => v,
            Err(err) => json!({"response": {"status": status_text(err.status()), "outcome": outcome_of(&err)}}),
        });
    }
    let mut b = json!({"resourceType": "Bundle", "id": new_id(), "type": "batch-response"});
    if !out.is_empty() {
        b["entry"] = Value::Array(out);
    }
    b
}

fn write_entry(base: &str, w: &WriteOutcome) -> Value {
    let status = if w.existing {
        "200 OK"
    } else if w.created {
        "201 Created"
    } else {
        "200 OK"
    };
    json!({"fullUrl": format!("{base}/{}/{}", w.stored.rtype, w.stored.id), "response": response_json(base, &w.stored, status)})
}

fn one_batch_entry(
    repo: &Repository,
    ctx: &RequestContext,
    base: &str,
    e: &Entry,
) -> Result<Value, RepoError> {
    let (segs, params) = split_url(&e.url);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (e.method, segs.as_slice()) {
        (Method::Post, [t]) => {
            let crit = e
                .if_none_exist
                .as_deref()
                .map(|q| split_url(&format!("?{q}")).1);
            let body = e.resource.clone().unwrap_or(Value::Null);
            let w = repo.create(ctx, t, body, crit.as_deref())?;
            Ok(write_entry(base, &w))
        }
        (Method::Put, [t, id]) => {
            let w = repo.update(
                ctx,
                t,
                id,
                e.resource.clone().unwrap_or(Value::Null),
                e.if_match,
            )?;
            Ok(write_entry(base, &w))
        }
        (Method::Put, [t]) if !params.is_empty() => {
            let w = repo.conditional_update(
                ctx,
                t,
                &params,
                e.resource.clone().unwrap_or(Value::Null),
                e.if_match,
            )?;
            Ok(write_entry(base, &w))
        }
        (Method::Delete, [t, id]) => {
            repo.delete(ctx, t, id, e.if_match)?;
            Ok(json!({"response": {"status": "204 No Content"}}))
        }
        (Method::Delete, [t]) if !params.is_empty() => {
            repo.conditional_delete(ctx, t, &params)?;
            Ok(json!({"response": {"status": "204 No Content"}}))
        }
        (Method::Get, [t, "_history"]) => {
            let page = repo.history(ctx, crate::repo::HistoryScope::Type(t), &params)?;
            Ok(history_entry(base, &format!("{t}/_history"), &page))
        }
        (Method::Get, [t, id]) => {
            let s = repo.read(ctx, t, id)?;
            Ok(read_entry(base, &s))
        }
        (Method::Get, [t, id, "_history", v]) => {
            let s = repo.vread(ctx, t, id, v)?;
            Ok(read_entry(base, &s))
        }
        (Method::Get, [t, id, "_history"]) => {
            let page = repo.history(ctx, crate::repo::HistoryScope::Instance(t, id), &params)?;
            Ok(history_entry(base, &format!("{t}/{id}/_history"), &page))
        }
        (Method::Get, ["_history"]) => {
            let page = repo.history(ctx, crate::repo::HistoryScope::System, &params)?;
            Ok(history_entry(base, "_history", &page))
        }
        (Method::Get, [t]) => {
            let page = repo.search(ctx, t, &params, false)?;
            let bundle = crate::render::searchset(base, t, &page);
            let v: Value = serde_json::from_slice(&bundle).unwrap_or(Value::Null);
            Ok(json!({"resource": v, "response": {"status": "200 OK"}}))
        }
        _ => Err(RepoError::Invalid(format!(
            "URL de requête non prise en charge : {} {}",
            method_name(e.method),
            e.url
        ))),
    }
}

/// A batch entry answering a history read: the history Bundle as its resource.
fn history_entry(base: &str, path: &str, page: &crate::repo::HistoryPage) -> Value {
    let bundle = crate::render::history(base, path, page);
    let v: Value = serde_json::from_slice(&bundle).unwrap_or(Value::Null);
    json!({"resource": v, "response": {"status": "200 OK"}})
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Delete => "DELETE",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Get => "GET",
    }
}

fn read_entry(base: &str, s: &Stored) -> Value {
    let v: Value = serde_json::from_slice(&s.content).unwrap_or(Value::Null);
    json!({"fullUrl": format!("{base}/{}/{}", s.rtype, s.id), "resource": v,
           "response": {"status": "200 OK", "etag": format!("W/\"{}\"", s.version), "lastModified": s.last_updated_iso()}})
}

/// Replaces every `reference` whose value is a key of `map` (recursively), and every attachment `url` naming
/// an entry of the Bundle by its fullUrl — `urn:uuid:…`, or an absolute URL given to a created entry (IHE MHD: a
/// DocumentReference points to the Binary sent with it; the Binary gets an id of the server's).
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "reference"
                    || k == "url" && child.as_str().is_some_and(|s| map.contains_key(s))
                {
                    if let Value::String(s) = child
                        && let Some(n) = map.get(s.as_str())
                    {
                        *s = n.clone();
                    }
                } else {
                    rewrite_references(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_references(x, map)),
        _ => {}
    }
}

/// The first `reference` still a `urn:uuid:` once the Bundle's fullUrls are resolved (but those of
/// conditional entries, resolved inside the transaction).
fn unresolved_uuid(v: &Value, conditional: &HashMap<String, usize>, out: &mut Option<String>) {
    if out.is_some() {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match child {
                    Value::String(s)
                        if k == "reference"
                            && s.starts_with("urn:uuid:")
                            && !conditional.contains_key(s) =>
                    {
                        *out = Some(s.clone());
                        return;
                    }
                    _ => unresolved_uuid(child, conditional, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| unresolved_uuid(x, conditional, out)),
        _ => {}
    }
}

/// Conditional references (`Patient?identifier=…`) found in a resource.
fn conditional_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "reference" {
                    if let Value::String(s) = child
                        && s.contains('?')
                        && !s.starts_with("http")
                    {
                        out.push(s.clone());
                    }
                } else {
                    conditional_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| conditional_refs(x, out)),
        _ => {}
    }
}

fn transaction(
    repo: &Repository,
    ctx: &RequestContext,
    base: &str,
    mut entries: Vec<Entry>,
    mut hook: Option<TxHook<'_>>,
) -> Result<Value, RepoError> {
    // Ids for creates are chosen up front so that urn:uuid references can be rewritten before indexing. The
    // fullUrls of conditional entries (a create with `ifNoneExist`, an update by criteria) name a resource known
    // only inside the transaction — the one found, or the one created under the id chosen here: references to
    // them are resolved there (`conditional_targets`), before any entry that may hold one is written.
    let mut map: HashMap<String, String> = HashMap::new();
    let mut new_ids: HashMap<usize, String> = HashMap::new();
    let mut conditional: HashMap<String, usize> = HashMap::new();
    let mut needs_lookup = false;
    for e in &entries {
        let (segs, params) = split_url(&e.url);
        let in_entry = |m: String| RepoError::InEntry {
            index: e.index,
            error: Box::new(RepoError::Invalid(m)),
        };
        match (e.method, segs.len()) {
            (Method::Post, 1) => {
                if e.if_none_exist.is_some() {
                    needs_lookup = true;
                }
                let id = new_id();
                if let Some(f) = &e.full_url {
                    let twice = if e.if_none_exist.is_some() {
                        map.contains_key(f) || conditional.insert(f.clone(), e.index).is_some()
                    } else {
                        conditional.contains_key(f)
                            || map.insert(f.clone(), format!("{}/{id}", segs[0])).is_some()
                    };
                    if twice {
                        return Err(in_entry(format!(
                            "fullUrl en double dans la transaction : {f}"
                        )));
                    }
                }
                new_ids.insert(e.index, id);
            }
            (Method::Put, 2) => {
                if let Some(f) = &e.full_url
                    && (conditional.contains_key(f)
                        || map
                            .insert(f.clone(), format!("{}/{}", segs[0], segs[1]))
                            .is_some())
                {
                    return Err(in_entry(format!(
                        "fullUrl en double dans la transaction : {f}"
                    )));
                }
            }
            (Method::Put, 1) if !params.is_empty() => {
                needs_lookup = true;
                if let Some(f) = &e.full_url {
                    if map.contains_key(f) || conditional.insert(f.clone(), e.index).is_some() {
                        return Err(in_entry(format!(
                            "fullUrl en double dans la transaction : {f}"
                        )));
                    }
                    new_ids.insert(e.index, new_id());
                }
            }
            (Method::Post | Method::Put, _) => {
                return Err(in_entry(format!(
                    "URL invalide pour {} : {}",
                    method_name(e.method),
                    e.url
                )));
            }
            _ => {}
        }
        if let Some(r) = &e.resource {
            let mut refs = Vec::new();
            conditional_refs(r, &mut refs);
            if !refs.is_empty() {
                needs_lookup = true;
            }
        }
    }
    // Duplicate targets in one transaction are an error (R4: the same resource cannot be changed twice).
    {
        let mut targets = std::collections::HashSet::new();
        for e in &entries {
            if matches!(e.method, Method::Put | Method::Delete) {
                let (segs, _) = split_url(&e.url);
                if segs.len() == 2 && !targets.insert(segs.join("/")) {
                    return Err(RepoError::InEntry {
                        index: e.index,
                        error: Box::new(RepoError::Invalid(format!(
                            "{} est modifiée deux fois dans la transaction",
                            e.url
                        ))),
                    });
                }
            }
        }
    }
    for e in entries.iter_mut() {
        if let Some(r) = &mut e.resource {
            rewrite_references(r, &map);
            // A `urn:uuid:` names an entry of this Bundle: one left is a reference to nothing.
            let mut left = None;
            unresolved_uuid(r, &conditional, &mut left);
            if let Some(u) = left {
                return Err(RepoError::InEntry {
                    index: e.index,
                    error: Box::new(RepoError::Invalid(format!(
                        "référence {u} : aucune entrée de la transaction n'a ce fullUrl"
                    ))),
                });
            }
        }
    }
    entries.sort_by_key(|e| (e.method, e.index));
    // Without conditional lookups every resource can be checked and indexed before the write lock is taken.
    let mut prepared: HashMap<usize, Prepared> = HashMap::new();
    if !needs_lookup {
        for e in entries.iter_mut() {
            if let Some(p) = prepare(e, &new_ids)? {
                prepared.insert(e.index, p);
            }
        }
    }
    let mut responses: Vec<(usize, Value)> = Vec::new();
    let mut deferred_gets: Vec<&Entry> = Vec::new();
    repo.write_tx_pub(&mut |c, st: &mut TxState| {
        responses.clear();
        deferred_gets.clear();
        let mut local_map = map.clone();
        // What each conditional entry targets, decided once the deletions are done.
        let mut targets: Option<HashMap<usize, String>> = None;
        for e in &entries {
            let wrap = |err: RepoError| RepoError::InEntry { index: e.index, error: Box::new(err) };
            if targets.is_none() && e.method != Method::Delete {
                let t = conditional_targets(c, st, &entries, &conditional, &new_ids)?;
                for (f, i) in &conditional {
                    if let Some(target) = t.get(i) {
                        local_map.insert(f.clone(), target.clone());
                    }
                }
                targets = Some(t);
            }
            // A conditional entry must end on the resource its fullUrl was resolved to: two conditional entries
            // of one transaction that meet on a resource (the second finding what the first created) would
            // otherwise leave a reference to nothing.
            let moved = |got: &str| {
                let want = targets.as_ref().and_then(|t| t.get(&e.index));
                match want {
                    Some(w) if w != got => Err(wrap(RepoError::Conflict(format!(
                        "l'entrée conditionnelle vise {got} alors que les références à son fullUrl désignent {w} : \
                         deux entrées conditionnelles de la transaction portent sur la même ressource"
                    )))),
                    _ => Ok(()),
                }
            };
            let (segs, params) = split_url(&e.url);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            match (e.method, segs.as_slice()) {
                (Method::Delete, [t, id]) => {
                    st.delete(c, ctx, t, id, e.if_match).or_else(|err| match err {
                        RepoError::NotFound(_) => Ok(None),
                        other => Err(other),
                    }).map_err(wrap)?;
                    responses.push((e.index, json!({"response": {"status": "204 No Content"}})));
                }
                (Method::Delete, [t]) => {
                    let ids = st.match_ids(c, t, &params).map_err(wrap)?;
                    if ids.len() > 1 {
                        return Err(wrap(RepoError::PreconditionFailed("plusieurs ressources correspondent".into())));
                    }
                    for id in ids {
                        st.delete(c, ctx, t, &id, None).map_err(wrap)?;
                    }
                    responses.push((e.index, json!({"response": {"status": "204 No Content"}})));
                }
                (Method::Post, [t]) => {
                    if let Some(q) = &e.if_none_exist {
                        let crit = split_url(&format!("?{q}")).1;
                        let ids = st.match_ids(c, t, &crit).map_err(wrap)?;
                        match ids.as_slice() {
                            [] => {}
                            [id] => {
                                moved(&format!("{t}/{id}"))?;
                                responses.push((e.index, json!({"fullUrl": format!("{base}/{t}/{id}"), "response": {"status": "200 OK", "location": format!("{base}/{t}/{id}")}})));
                                continue;
                            }
                            _ => return Err(wrap(RepoError::PreconditionFailed("plusieurs ressources correspondent à ifNoneExist".into()))),
                        }
                    }
                    let owned;
                    let p = match prepared.get(&e.index) {
                        Some(p) => p,
                        None => {
                            let mut en = clone_entry(e);
                            resolve_in_tx(c, st, &mut en, &local_map).map_err(wrap)?;
                            owned = prepare(&mut en, &new_ids)?.ok_or_else(|| wrap(RepoError::Invalid("entrée vide".into())))?;
                            &owned
                        }
                    };
                    let w = st.create(c, ctx, p, None).map_err(wrap)?;
                    if e.if_none_exist.is_some() {
                        moved(&format!("{}/{}", w.stored.rtype, w.stored.id))?;
                    }
                    responses.push((e.index, write_entry(base, &w)));
                }
                (Method::Put, [_, _]) => {
                    let owned;
                    let p = match prepared.get(&e.index) {
                        Some(p) => p,
                        None => {
                            let mut en = clone_entry(e);
                            resolve_in_tx(c, st, &mut en, &local_map).map_err(wrap)?;
                            owned = prepare(&mut en, &new_ids)?.ok_or_else(|| wrap(RepoError::Invalid("entrée vide".into())))?;
                            &owned
                        }
                    };
                    let w = st.update(c, ctx, p, e.if_match).map_err(wrap)?;
                    responses.push((e.index, write_entry(base, &w)));
                }
                (Method::Put, [t]) => {
                    let mut en = clone_entry(e);
                    resolve_in_tx(c, st, &mut en, &local_map).map_err(wrap)?;
                    let body = en.resource.unwrap_or(Value::Null);
                    let body_id = body.get("id").and_then(Value::as_str).map(str::to_string);
                    let chosen = new_ids.get(&e.index).map(String::as_str);
                    let w = st.conditional_update(c, ctx, t, &params, body, body_id.as_deref(), e.if_match, chosen).map_err(wrap)?;
                    moved(&format!("{}/{}", w.stored.rtype, w.stored.id))?;
                    responses.push((e.index, write_entry(base, &w)));
                }
                (Method::Get, _) => deferred_gets.push(e),
                _ => return Err(wrap(RepoError::Invalid(format!("URL de requête non prise en charge : {}", e.url)))),
            }
        }
        if let Some(h) = hook.as_mut() {
            let mut ordered: Vec<&(usize, Value)> = responses.iter().collect();
            ordered.sort_by_key(|r| r.0);
            let ordered: Vec<Value> = ordered.into_iter().map(|r| r.1.clone()).collect();
            h(&mut TxView { c, st }, &ordered)?;
        }
        Ok(())
    })?;
    // Reads run after the writes they may depend on have committed.
    for e in deferred_gets {
        let v = match one_batch_entry(repo, ctx, base, e) {
            Ok(v) => v,
            Err(err) => {
                json!({"response": {"status": status_text(err.status()), "outcome": outcome_of(&err)}})
            }
        };
        responses.push((e.index, v));
    }
    responses.sort_by_key(|r| r.0);
    let mut audit_rec = AuditLite::new(ctx);
    audit_rec.entries = responses.len();
    repo.audit_async(audit_rec.into_record());
    let mut out = json!({"resourceType": "Bundle", "id": new_id(), "type": "transaction-response"});
    // FHIR JSON has no empty arrays: a transaction without entries answers without `entry`.
    if !responses.is_empty() {
        out["entry"] = Value::Array(responses.into_iter().map(|r| r.1).collect());
    }
    Ok(out)
}

struct AuditLite {
    principal: String,
    client: Option<String>,
    entries: usize,
}

impl AuditLite {
    fn new(ctx: &RequestContext) -> Self {
        AuditLite {
            principal: ctx.principal.clone(),
            client: ctx.client.clone(),
            entries: 0,
        }
    }
    fn into_record(self) -> crate::audit::AuditRecord {
        crate::audit::AuditRecord {
            recorded: crate::now_ms(),
            principal: self.principal,
            action: "transaction".into(),
            outcome: "success".into(),
            client: self.client,
            detail: Some(format!("entries={}", self.entries)),
            ..Default::default()
        }
    }
}

fn clone_entry(e: &Entry) -> Entry {
    Entry {
        index: e.index,
        method: e.method,
        url: e.url.clone(),
        full_url: e.full_url.clone(),
        resource: e.resource.clone(),
        if_none_exist: e.if_none_exist.clone(),
        if_match: e.if_match,
    }
}

/// Inside the transaction, before the first create or update: the resource each conditional entry with a
/// fullUrl will end on (by entry index) — for a create with `ifNoneExist`, the one resource matching or the id
/// chosen for it; for an update by criteria, the one matching, or the body's id, or the id chosen for it.
/// Several matches are the entry's 412, as when it is processed.
fn conditional_targets(
    c: &mut dyn crate::SqlConn,
    st: &mut TxState,
    entries: &[Entry],
    conditional: &HashMap<String, usize>,
    new_ids: &HashMap<usize, String>,
) -> Result<HashMap<usize, String>, RepoError> {
    let mut out = HashMap::new();
    for &index in conditional.values() {
        let Some(e) = entries.iter().find(|e| e.index == index) else {
            continue;
        };
        let wrap = |err: RepoError| RepoError::InEntry {
            index,
            error: Box::new(err),
        };
        let (segs, params) = split_url(&e.url);
        let [t] = segs.as_slice() else { continue };
        let criteria = match (&e.if_none_exist, e.method) {
            (Some(q), Method::Post) => split_url(&format!("?{q}")).1,
            (_, Method::Put) => params,
            _ => continue,
        };
        let ids = st.match_ids(c, t, &criteria).map_err(wrap)?;
        let id = match ids.as_slice() {
            [id] => id.clone(),
            [] => match e
                .resource
                .as_ref()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .filter(|_| e.method == Method::Put)
            {
                Some(body_id) => body_id.to_string(),
                None => new_ids.get(&index).cloned().unwrap_or_default(),
            },
            _ => {
                return Err(wrap(RepoError::PreconditionFailed(
                    "plusieurs ressources correspondent aux critères de l'entrée conditionnelle"
                        .into(),
                )));
            }
        };
        out.insert(index, format!("{t}/{id}"));
    }
    Ok(out)
}

/// Inside the transaction: rewrites references mapped by conditional creates and resolves conditional
/// references (`Type?criteria` must match exactly one resource).
fn resolve_in_tx(
    c: &mut dyn crate::SqlConn,
    st: &mut TxState,
    e: &mut Entry,
    map: &HashMap<String, String>,
) -> Result<(), RepoError> {
    let Some(r) = &mut e.resource else {
        return Ok(());
    };
    rewrite_references(r, map);
    let mut refs = Vec::new();
    conditional_refs(r, &mut refs);
    let mut cond_map = HashMap::new();
    for reference in refs {
        let (segs, params) = split_url(&reference);
        let [t] = segs.as_slice() else {
            return Err(RepoError::Invalid(format!(
                "référence conditionnelle invalide : {reference}"
            )));
        };
        let ids = st.match_ids(c, t, &params)?;
        match ids.as_slice() {
            [id] => {
                cond_map.insert(reference.clone(), format!("{t}/{id}"));
            }
            [] => {
                return Err(RepoError::PreconditionFailed(format!(
                    "la référence conditionnelle {reference} ne correspond à aucune ressource"
                )));
            }
            _ => {
                return Err(RepoError::PreconditionFailed(format!(
                    "la référence conditionnelle {reference} correspond à plusieurs ressources"
                )));
            }
        }
    }
    rewrite_references(r, &cond_map);
    Ok(())
}

/// The entry's write checked and indexed (a create, or an update by id; `None` for other entries). Its resource
/// is moved out of the entry, not copied: a prepared entry's resource is not read again.
fn prepare(e: &mut Entry, new_ids: &HashMap<usize, String>) -> Result<Option<Prepared>, RepoError> {
    let index = e.index;
    let wrap = |err: RepoError| RepoError::InEntry {
        index,
        error: Box::new(err),
    };
    let (segs, _) = split_url(&e.url);
    if !matches!((e.method, segs.len()), (Method::Post, 1) | (Method::Put, 2)) {
        return Ok(None);
    }
    let Some(mut body) = e.resource.take() else {
        return Ok(None);
    };
    match (e.method, segs.as_slice()) {
        (Method::Post, [t]) => {
            if let (Value::Object(m), Some(id)) = (&mut body, new_ids.get(&e.index)) {
                m.insert("id".into(), Value::String(id.clone()));
            }
            let id = new_ids.get(&e.index).cloned();
            let mut p = Prepared::new(t, body, id.as_deref()).map_err(wrap)?;
            // The id was generated above (`new_id`), not taken from the client.
            p.fresh_id = true;
            Ok(Some(p))
        }
        (Method::Put, [t, id]) => Prepared::new(t, body, Some(id)).map(Some).map_err(wrap),
        _ => Ok(None),
    }
}
