//! The HTTP edge: FHIR R4 REST (JSON) over axum. Adapts requests to `socle_store::Repository` calls (run on
//! blocking threads) and their results to FHIR responses; every error becomes an `OperationOutcome`.
//!
//! Owns: routing, headers (ETag, Location, Last-Modified, Prefer, content negotiation), body limits.

// Handlers return `Result<_, Response>` so that `?`-style early error responses stay readable; errors are the cold
// path, so the size of `Response` in `Err` does not matter.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use socle_fhir::{IssueSeverity, IssueType, OperationOutcome};
use socle_store::repo::{HistoryScope, Stored, WriteOutcome};
use socle_store::{RepoError, Repository, RequestContext};

/// Server options.
#[derive(Clone)]
pub struct Options {
    pub max_body: usize,
    pub base_url: Option<String>,
    /// The OpenID Connect provider; `None` only with `insecure_local`.
    pub auth: Option<Arc<socle_auth::Provider>>,
    /// Development switch: no authentication, every request acts as the local developer (loopback only).
    pub insecure_local: bool,
    /// The access policy engine (opened by `serve` on the same store).
    pub policy: Option<Arc<socle_policy::Engine>>,
    /// The DMP (documents, records); `None`: MHD submissions are refused.
    pub dmp: Option<Arc<dmp::Dmp>>,
}

pub mod dmp;
mod guard;
mod insi;
mod oidc;
mod policy;
mod rniv;
mod rules;

struct AppState {
    repo: Arc<Repository>,
    registry: Arc<socle_ins::Registry>,
    capability: Vec<u8>,
    auth: Option<Arc<socle_auth::Provider>>,
    policy: Option<Arc<socle_policy::Engine>>,
    insecure_local: bool,
    /// `http://host:port` as clients see Socle (cookies are `Secure` under https).
    public_url: String,
    opts: Options,
}

type App = Arc<AppState>;

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
pub fn router(repo: Arc<Repository>, registry: Arc<socle_ins::Registry>, opts: Options) -> Router {
    let public_url = opts
        .auth
        .as_ref()
        .map(|a| a.config().public_url.clone())
        .unwrap_or_default();
    let capability = crate::capability::capability_statement(&public_url);
    let state = Arc::new(AppState {
        repo,
        registry,
        capability,
        auth: opts.auth.clone(),
        policy: opts.policy.clone(),
        insecure_local: opts.insecure_local,
        public_url,
        opts,
    });
    let fhir = Router::new()
        .route("/fhir", post(bundle).get(system_search))
        .route("/fhir/", post(bundle).get(system_search))
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/$audit-trail", get(audit_trail))
        .route("/fhir/$audit-trail/{seq}", get(audit_trail_record))
        .route("/fhir/Patient/{id}/$audit-trail", get(patient_audit_trail))
        .route("/fhir/Patient/$ins-retrieve", post(insi::retrieve))
        .route("/fhir/Patient/$merge", post(rniv::merge))
        .route("/fhir/Patient/{id}/$duplicates", get(rniv::duplicates))
        .route(
            "/fhir/Patient/{id}/$policy-rules",
            get(rules::list).post(rules::add),
        )
        .route(
            "/fhir/Patient/{id}/$policy-rules/{rule}",
            axum::routing::delete(rules::revoke),
        )
        .route(
            "/fhir/Patient/{id}/$delegation-code",
            post(rules::delegation_code),
        )
        .route(
            "/fhir/Patient/$delegation-claim",
            post(rules::delegation_claim),
        )
        .route("/fhir/Patient/$ins-verify", post(insi::verify))
        .route("/fhir/Patient/{id}/$everything", get(everything))
        .route("/fhir/Patient/{id}/$dmp", get(dmp::record_state))
        .route("/fhir/Patient/{id}/$dmp-close", post(dmp::record_close))
        .route("/fhir/Patient/{id}/$dmp-object", post(dmp::record_object))
        .route("/fhir/Patient/{id}/$dmp-reopen", post(dmp::record_reopen))
        .route(
            "/fhir/DocumentReference/{id}/$dmp-mask",
            post(dmp::doc_mask),
        )
        .route(
            "/fhir/DocumentReference/{id}/$dmp-unmask",
            post(dmp::doc_unmask),
        )
        .route(
            "/fhir/DocumentReference/{id}/$dmp-announce",
            post(dmp::doc_announce),
        )
        .route(
            "/fhir/DocumentReference/{id}/$dmp-archive",
            post(dmp::doc_archive),
        )
        .route(
            "/fhir/DocumentReference/{id}/$dmp-unarchive",
            post(dmp::doc_unarchive),
        )
        .route("/fhir/Binary/{id}/$n1-body", get(dmp::n1_body))
        .route(
            "/fhir/Binary/{id}",
            get(dmp::read_binary)
                .put(
                    |s: State<App>, Path(id): Path<String>, h: HeaderMap, r: Req, b: Body| {
                        update(s, Path(("Binary".to_string(), id)), h, r, b)
                    },
                )
                .delete(
                    |s: State<App>, Path(id): Path<String>, h: HeaderMap, r: Req| {
                        delete(s, Path(("Binary".to_string(), id)), h, r)
                    },
                ),
        )
        .route(
            "/fhir/OperationDefinition/ins-retrieve",
            get(|req: Req| insi::operation_definition("ins-retrieve", req)),
        )
        .route(
            "/fhir/OperationDefinition/ins-verify",
            get(|req: Req| insi::operation_definition("ins-verify", req)),
        )
        .route(
            "/fhir/OperationDefinition/duplicates",
            get(|req: Req| insi::operation_definition("duplicates", req)),
        )
        .route(
            "/fhir/OperationDefinition/merge",
            get(|req: Req| insi::operation_definition("merge", req)),
        )
        .route(
            "/fhir/OperationDefinition/everything",
            get(|req: Req| insi::operation_definition("everything", req)),
        )
        .route("/fhir/_history", get(history_system))
        .route(
            "/fhir/{rtype}",
            get(search_get)
                .post(create)
                .put(conditional_update)
                .delete(conditional_delete),
        )
        .route("/fhir/{rtype}/_search", post(search_post))
        .route("/fhir/{rtype}/_history", get(history_type))
        .route("/fhir/{rtype}/{id}", get(read).put(update).delete(delete))
        .route("/fhir/{rtype}/{id}/_history", get(history_instance))
        .route("/fhir/{owner}/{id}/{rtype}", get(compartment_search))
        .route("/fhir/{rtype}/{id}/_history/{vid}", get(vread))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ));
    Router::new()
        .route("/health", get(health))
        .merge(fhir)
        .merge(oidc::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// What the identity provider needs; it is opened once the address is bound (the issuer URL names the port).
pub struct AuthSetup {
    pub store: Arc<dyn socle_store::Store>,
    pub public_url: Option<String>,
    pub trusted_networks: Vec<socle_auth::Network>,
    /// HTTPS (and client certificates); `None`: plain HTTP.
    pub tls: Option<crate::tls::Tls>,
    /// The key that seals the provider's secrets in the database.
    pub secrets: Arc<socle_auth::seal::Sealer>,
}

/// Binds `listen` and serves until SIGINT/SIGTERM.
pub async fn serve(
    repo: Arc<Repository>,
    registry: Arc<socle_ins::Registry>,
    listen: SocketAddr,
    mut opts: Options,
    auth: AuthSetup,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("écoute sur {listen} impossible : {e}"))?;
    let local = listener.local_addr()?;
    let scheme = if auth.tls.is_some() { "https" } else { "http" };
    let public_url = auth.public_url.clone().unwrap_or_else(|| {
        let host = if local.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), local.port())
        } else {
            local
        };
        format!("{scheme}://{host}")
    });
    let mut config = socle_auth::ProviderConfig::new(&public_url);
    config.trusted_networks = auth.trusted_networks;
    config.mtls = auth.tls.as_ref().is_some_and(crate::tls::Tls::mutual);
    config.secrets = Some(auth.secrets.clone());
    let st = auth.store.clone();
    let provider =
        tokio::task::spawn_blocking(move || socle_auth::Provider::open(auth.store, config))
            .await?
            .map_err(|e| anyhow::anyhow!("fournisseur d'identité : {e}"))?;
    // Professionals' claims come from the Annuaire at each login and token.
    let directory = repo.clone();
    let idp = RequestContext {
        principal: "identity-provider".into(),
        client: None,
        base_url: format!("{public_url}/fhir"),
    };
    provider.set_pro_profiles(Arc::new(move |rpps: &str| {
        crate::admin::current_professional_profile(&directory, &idp, rpps)
            .map(|found| found.map(|(_, profile)| profile))
            .map_err(|e| e.to_string())
    }));
    opts.auth = Some(provider);
    let engine = tokio::task::spawn_blocking(move || socle_policy::Engine::open(st))
        .await?
        .map_err(|e| anyhow::anyhow!("moteur de politique d'accès : {e}"))?;
    opts.policy = Some(Arc::new(engine));
    if opts.insecure_local {
        let banner = "ATTENTION : --insecure-local — AUCUNE AUTHENTIFICATION. Toute requête agit avec tous les droits. \
                      Réservé au développement sur cette machine ; jamais avec des données réelles.";
        tracing::warn!("{banner}");
        eprintln!("\n!!! {banner} !!!\n");
    }
    let app = router(repo.clone(), registry, opts).layer(axum::middleware::map_request(peer_facts));
    tracing::info!(address = %local, backend = repo.store().backend(), "Socle prêt : API FHIR sur {scheme}://{local}/fhir");
    println!(
        "Socle prêt : API FHIR sur {scheme}://{local}/fhir (stockage {}) ; identification : {public_url}/auth/pro et {public_url}/auth/patient",
        repo.store().backend()
    );
    let app = app.into_make_service_with_connect_info::<crate::tls::Peer>();
    match auth.tls {
        Some(tls) => {
            axum::serve(crate::tls::TlsListener::new(listener, tls)?, app)
                .with_graceful_shutdown(shutdown_signal())
                .await?
        }
        None => {
            axum::serve(crate::tls::PlainListener(listener), app)
                .with_graceful_shutdown(shutdown_signal())
                .await?
        }
    }
    repo.flush_audit();
    Ok(())
}

/// Makes the connection's facts available to handlers: its address (`ConnectInfo<SocketAddr>`) and the client
/// certificate presented in the TLS handshake, if any.
async fn peer_facts(mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(ConnectInfo(peer)) = req
        .extensions()
        .get::<ConnectInfo<crate::tls::Peer>>()
        .cloned()
    {
        req.extensions_mut().insert(ConnectInfo(peer.addr));
        if let Some(c) = peer.certificate {
            req.extensions_mut().insert(c);
        }
    }
    req
}

/// The thumbprint of the client certificate of the request's connection, if one was presented.
pub fn presented_certificate(ext: &axum::http::Extensions) -> Option<String> {
    ext.get::<Arc<crate::tls::PresentedCertificate>>()
        .map(|c| c.thumbprint.clone())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

// ------------------------------------------------------------------ request helpers

struct Req {
    /// Who is calling (set by [`guard::guard`]).
    caller: Option<guard::Caller>,
    /// The break-glass header, as sent (see [`policy::break_glass`]).
    break_glass: Option<String>,
    params: Vec<(String, String)>,
    ctx: RequestContext,
    pretty: bool,
    strict: bool,
    prefer_return: PreferReturn,
    /// `Prefer: return=…` was sent (a Bundle's answer carries resources or outcomes only when asked).
    prefer_given: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum PreferReturn {
    Minimal,
    Representation,
    Outcome,
}

/// Every FHIR handler's common request facts (query, negotiation, Prefer, who and from where), checked once.
impl axum::extract::FromRequestParts<App> for Req {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &App,
    ) -> Result<Self, Response> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
        let caller = parts.extensions.get::<guard::Caller>().cloned();
        prepare(app, &parts.headers, parts.uri.query(), peer, caller)
    }
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn base_url(app: &AppState, headers: &HeaderMap) -> String {
    if let Some(b) = &app.opts.base_url {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/fhir")
}

/// Whether the query string, percent-decoded, is UTF-8: a parameter's value is never read with the invalid
/// bytes replaced (`family=%C3` would search for a replacement character and find nothing, as if that were
/// an answer).
fn query_is_utf8(q: &str) -> bool {
    let b = q.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&out).is_ok()
}

/// Whether a browser sent the request for a page of another origin than this server (its `Origin` names
/// another host and port than the request's `Host`, or is `null`). Without authentication nothing else tells a
/// developer's own calls from a page's: a form or a `text/plain` body (a raw `Binary`) needs no CORS approval.
fn from_another_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("null");
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    !authority.eq_ignore_ascii_case(host)
}

fn prepare(
    app: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: SocketAddr,
    caller: Option<guard::Caller>,
) -> Result<Req, Response> {
    if query.is_some_and(|q| !query_is_utf8(q)) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "chaîne de requête mal encodée : une fois décodée (%XX), elle n'est pas de l'UTF-8 valide",
        ));
    }
    if app.insecure_local && from_another_origin(headers) {
        return Err(error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "--insecure-local : requête d'une page web d'une autre origine refusée (sans authentification, \
             toute page ouverte dans un navigateur de cette machine pourrait sinon lire et écrire ici)",
        ));
    }
    let params = parse_query(query);
    let mut pretty = false;
    for (k, v) in &params {
        match k.as_str() {
            "_format" => check_format(v)?,
            "_pretty" => pretty = v == "true",
            _ => {}
        }
    }
    if !params.iter().any(|(k, _)| k == "_format")
        && let Some(accept) = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok())
        && !accepts_json(accept)
    {
        return Err(error(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            format!(
                "format demandé non disponible ({accept}) : seul JSON (application/fhir+json) est servi"
            ),
        ));
    }
    // `Accept: application/fhir+json; fhirVersion=3.0`: another version than R4 asked for, and only that.
    if !params.iter().any(|(k, _)| k == "_format")
        && let Some(accept) = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok())
    {
        // Each media range stands alone: refused only when every range that names a version names another.
        let ranges: Vec<(bool, Option<&str>)> = accept
            .split(',')
            .map(|r| {
                let mut parts = r.split(';');
                let json = accepts_json(parts.next().unwrap_or(""));
                let version = parts.find_map(|p| p.trim().strip_prefix("fhirVersion="));
                (json, version)
            })
            .collect();
        let versioned = ranges.iter().any(|(_, v)| v.is_some());
        let servable = ranges
            .iter()
            .any(|(json, v)| *json && v.is_none_or(|v| v.trim().starts_with("4.0")));
        if versioned && !servable {
            return Err(error(
                StatusCode::NOT_ACCEPTABLE,
                IssueType::NotSupported,
                format!(
                    "version FHIR demandée non servie ({accept}) : ce serveur parle FHIR R4 (4.0)"
                ),
            ));
        }
    }
    let prefer = headers
        .get_all("prefer")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut strict = false;
    let mut prefer_return = PreferReturn::Representation;
    let mut prefer_given = false;
    for p in prefer.split([',', ';']).map(str::trim) {
        match p {
            "handling=strict" => strict = true,
            "return=minimal" => prefer_return = PreferReturn::Minimal,
            "return=OperationOutcome" => prefer_return = PreferReturn::Outcome,
            "return=representation" => prefer_return = PreferReturn::Representation,
            _ => {}
        }
        prefer_given |= p.starts_with("return=");
    }
    Ok(Req {
        ctx: RequestContext {
            principal: caller
                .as_ref()
                .map_or_else(|| "anonymous".into(), guard::Caller::label),
            client: Some(peer.ip().to_string()),
            base_url: base_url(app, headers),
        },
        caller,
        break_glass: policy::break_glass_header(headers),
        params,
        pretty,
        strict,
        prefer_return,
        prefer_given,
    })
}

fn accepts_json(accept: &str) -> bool {
    accept.split(',').any(|a| {
        let m = a.split(';').next().unwrap_or("").trim();
        matches!(
            m,
            "*/*"
                | "application/*"
                | "application/json"
                | "application/fhir+json"
                | "application/json+fhir"
                | ""
        )
    })
}

fn check_format(v: &str) -> Result<(), Response> {
    // A media type's parameters (`;fhirVersion=4.0`, `;charset=utf-8`): only a FHIR version other than R4's
    // is refused.
    let mut parts = v.split(';');
    let base = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    for p in parts {
        if let Some((k, val)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("fhirVersion")
            && !val.trim().starts_with("4.0")
        {
            return Err(error(
                StatusCode::NOT_ACCEPTABLE,
                IssueType::NotSupported,
                format!(
                    "version FHIR {} non servie : ce serveur parle FHIR R4 (4.0)",
                    val.trim()
                ),
            ));
        }
    }
    match base.as_str() {
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir" => Ok(()),
        "xml" | "application/xml" | "application/fhir+xml" | "text/xml" => Err(error(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            "le format XML n'est pas pris en charge : utilisez JSON (_format=json)",
        )),
        other => Err(error(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            format!("_format inconnu : {other}"),
        )),
    }
}

/// The media types FHIR's JSON is sent as.
const FHIR_JSON_TYPES: [&str; 4] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
    "text/json",
];

/// A request's `Content-Type`, and its media type alone (lowercase, without parameters).
fn content_type(headers: &HeaderMap) -> Option<(&str, String)> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some((ct, mime))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Response> {
    match content_type(headers) {
        None => Ok(()),
        Some((_, mime)) if FHIR_JSON_TYPES.contains(&mime.as_str()) => Ok(()),
        Some((ct, _)) => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            format!("type de contenu non pris en charge : {ct} (attendu application/fhir+json)"),
        )),
    }
}

/// Past the limit the rest of the body is still read (and dropped), up to `DRAIN_CAP`, so that the client gets
/// the 413 instead of a connection reset in the middle of its upload.
const DRAIN_CAP: usize = 256 * 1024 * 1024;

async fn read_body(app: &AppState, body: Body) -> Result<bytes::Bytes, Response> {
    use futures_util::StreamExt;
    let max = app.opts.max_body;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                IssueType::Structure,
                "corps de requête interrompu",
            ));
        };
        total = total.saturating_add(chunk.len());
        if total > DRAIN_CAP {
            break;
        }
        if total <= max {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooLong,
            format!("corps de requête trop volumineux : au plus {max} octets"),
        ));
    }
    Ok(buf.freeze())
}

/// The content type of a request body sent to `Binary` in its own format (`POST /Binary` or `PUT /Binary/{id}` with
/// a PDF, an image, a CDA document in `application/xml`…), not as a FHIR resource: any type but FHIR's JSON ones
/// (FHIR's XML is refused as for any resource). The media type in lower case, its parameters kept (a text's
/// `charset` says how to read it back), single-spaced. `None` without a `Content-Type`.
fn raw_binary_type(rtype: &str, headers: &HeaderMap) -> Option<String> {
    if rtype != "Binary" {
        return None;
    }
    let (ct, mime) = content_type(headers)?;
    let fhir = FHIR_JSON_TYPES.contains(&mime.as_str())
        || matches!(
            mime.as_str(),
            "application/fhir+xml" | "application/xml+fhir"
        );
    if fhir || mime.is_empty() {
        return None;
    }
    let params: Vec<String> = ct
        .split(';')
        .skip(1)
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    Some(if params.is_empty() {
        mime
    } else {
        format!("{mime}; {}", params.join("; "))
    })
}

/// A request body sent to `Binary` in its own format, as the `Binary` resource that holds it (FHIR's REST
/// convention): `contentType` from the `Content-Type`, the bytes in `data`, `securityContext` from the
/// `X-Security-Context` header (a reference: the resource whose access rules the bytes follow). `id`: the one of
/// the URL, for an update.
async fn raw_binary_body(
    app: &AppState,
    headers: &HeaderMap,
    mime: String,
    id: Option<&str>,
    body: Body,
) -> Result<Value, Response> {
    use base64::Engine as _;
    let bytes = read_body(app, body).await?;
    let mut bin = json!({"resourceType": "Binary", "contentType": mime});
    if let Some(id) = id {
        bin["id"] = json!(id);
    }
    if let Some(ctx) = headers.get("x-security-context") {
        let Some(reference) = ctx.to_str().ok().map(str::trim).filter(|r| !r.is_empty()) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                IssueType::Invalid,
                "en-tête X-Security-Context illisible : une référence (Type/id) est attendue",
            ));
        };
        bin["securityContext"] = json!({"reference": reference});
    }
    if !bytes.is_empty() {
        bin["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
    }
    Ok(bin)
}

/// The resource a create or an update carries: JSON, or the bytes of a `Binary` sent in their own format.
async fn resource_body(
    app: &AppState,
    rtype: &str,
    id: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, Response> {
    match raw_binary_type(rtype, headers) {
        Some(mime) => raw_binary_body(app, headers, mime, id, body).await,
        None => json_body(app, headers, body).await,
    }
}

async fn json_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, Response> {
    check_content_type(headers)?;
    let bytes = read_body(app, body).await?;
    if bytes.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "corps de requête vide : une ressource JSON est attendue",
        ));
    }
    // A UTF-8 byte order mark (some Windows tools write one) is not part of the JSON.
    let json = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let v = serde_json::from_slice::<Value>(json).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!(
                "JSON invalide (ligne {}, colonne {}) : {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    socle_fhir::resource::check_duplicate_keys(json).map_err(|m| {
        error(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("JSON invalide : {m}"),
        )
    })?;
    no_blob_reference(&v)?;
    Ok(v)
}

/// A `Binary` naming stored document bytes (`socle_dmp::EXT_BLOB`) is written by the DMP's feeds only: from a
/// client, such an extension would serve bytes of a document the client may not read.
fn no_blob_reference(v: &Value) -> Result<(), Response> {
    let names_blob = |r: &Value| {
        r["resourceType"] == "Binary"
            && r["meta"]["extension"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["url"] == socle_dmp::EXT_BLOB))
    };
    let entries = v["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    if names_blob(v)
        || (v["resourceType"] == "Bundle" && entries.iter().any(|e| names_blob(&e["resource"])))
    {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::Security,
            format!(
                "extension {} réservée : les octets d'un document du DMP ne s'enregistrent que par un flux ITI-65",
                socle_dmp::EXT_BLOB
            ),
        ));
    }
    Ok(())
}

/// The precondition of a write: `If-Match` (a version, or `*`: it must exist) or, on `PUT`, `If-None-Match: *`
/// (it must not exist: a create that never overwrites).
fn write_precondition(headers: &HeaderMap) -> Result<Option<i64>, Response> {
    let Some(h) = headers.get(header::IF_NONE_MATCH) else {
        return if_match(headers);
    };
    if headers.contains_key(header::IF_MATCH) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "If-Match et If-None-Match ensemble : un seul des deux",
        ));
    }
    match h.to_str().map(str::trim) {
        Ok("*") => Ok(Some(socle_store::bundle::MUST_NOT_EXIST)),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            "If-None-Match sur une écriture : seul * est pris en charge (créer sans jamais écraser)",
        )),
    }
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Response> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(h) => h
            .to_str()
            .ok()
            .and_then(socle_store::bundle::parse_etag)
            .map(Some)
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    IssueType::Invalid,
                    "If-Match invalide (attendu W/\"<version>\" ou *)",
                )
            }),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "tâche interrompue",
        )
    })
}

// ------------------------------------------------------------------ response helpers

fn error(status: StatusCode, code: IssueType, msg: impl Into<String>) -> Response {
    outcome_response(status, &OperationOutcome::error(code, msg))
}

fn outcome_response(status: StatusCode, oo: &OperationOutcome) -> Response {
    let body = serde_json::to_vec(&oo.to_json()).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body,
    )
        .into_response()
}

fn repo_error(e: &RepoError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match (e, e.status()) {
        (RepoError::Search(s), _) => s.issue_type(),
        (_, 400) => IssueType::Invalid,
        (_, 403) => IssueType::Forbidden,
        (_, 404) => IssueType::NotFound,
        (_, 409 | 412) => IssueType::Conflict,
        (_, 410) => IssueType::Deleted,
        (_, 422) => IssueType::Processing,
        (_, 503) => IssueType::Transient,
        _ => IssueType::Exception,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "échec interne");
    }
    let mut oo = OperationOutcome::new();
    match e {
        RepoError::InEntry { index, .. } => oo.push_at(
            IssueSeverity::Error,
            code,
            e.to_string(),
            format!("Bundle.entry[{index}]"),
        ),
        _ => oo.push(IssueSeverity::Error, code, e.to_string()),
    }
    outcome_response(status, &oo)
}

fn pretty(bytes: Vec<u8>) -> Vec<u8> {
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => serde_json::to_vec_pretty(&v).unwrap_or(bytes),
        Err(_) => bytes,
    }
}

fn fhir_bytes(status: StatusCode, body: Vec<u8>, req: &Req) -> Response {
    let body = if req.pretty { pretty(body) } else { body };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body,
    )
        .into_response()
}

fn http_date(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

fn version_headers(resp: &mut Response, s: &Stored) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", s.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(s.last_updated)) {
        h.insert(header::LAST_MODIFIED, v);
    }
}

fn resource_response(status: StatusCode, s: &Stored, req: &Req) -> Response {
    let mut resp = fhir_bytes(status, s.content.clone(), req);
    version_headers(&mut resp, s);
    resp
}

fn write_response(w: &WriteOutcome, req: &Req) -> Response {
    let status = if w.existing {
        StatusCode::OK
    } else if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let s = &w.stored;
    let mut resp = match req.prefer_return {
        PreferReturn::Representation => fhir_bytes(status, s.content.clone(), req),
        PreferReturn::Minimal => status.into_response(),
        PreferReturn::Outcome => {
            let verb = if w.existing {
                "existante (création conditionnelle)"
            } else if w.created {
                "créée"
            } else {
                "mise à jour"
            };
            let oo = OperationOutcome::single(
                IssueSeverity::Information,
                IssueType::Informational,
                format!("{}/{} {verb}, version {}", s.rtype, s.id, s.version),
            );
            outcome_response(status, &oo)
        }
    };
    version_headers(&mut resp, s);
    let loc = format!(
        "{}/{}/{}/_history/{}",
        req.ctx.base_url, s.rtype, s.id, s.version
    );
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(header::LOCATION, v.clone());
        if w.created {
            resp.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
    }
    resp
}

// ------------------------------------------------------------------ handlers

async fn health() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let hint = match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => {
            format!(" (sans la barre oblique finale : {trimmed} ?)")
        }
        _ => String::new(),
    };
    error(
        StatusCode::NOT_FOUND,
        IssueType::NotFound,
        format!("aucune ressource à l'adresse {path}{hint}"),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueType::NotSupported,
        format!("méthode {method} non permise sur {}", uri.path()),
    )
}

macro_rules! tryr {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn metadata(State(app): State<App>, req: Req) -> Response {
    fhir_bytes(StatusCode::OK, app.capability.clone(), &req)
}

/// `_req` still runs the common checks (format, Accept) before the answer.
async fn system_search(_req: Req) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        IssueType::NotSupported,
        "la recherche sur tous les types n'est pas prise en charge : cherchez sur un type (GET /fhir/Patient?…)",
    )
}

/// A read by id: on an embedded store it runs in place (a few microseconds; handing it to the blocking pool
/// cost more than the read and doubled the p99 under load), otherwise like `run`.
async fn run_point_read<T: Send + 'static>(
    app: &App,
    req: &Req,
    f: impl FnOnce(&Repository, &RequestContext) -> Result<T, RepoError> + Send + 'static,
) -> Result<T, Response> {
    if app.repo.point_reads_are_local() {
        f(&app.repo, &req.ctx).map_err(|e| repo_error(&e))
    } else {
        run(app, req, None, f).await
    }
}

/// Runs an interaction on a blocking thread. A failed write is audited here (its data transaction rolled back,
/// taking its audit record with it); reads audit themselves in the repository.
async fn run<T: Send + 'static>(
    app: &App,
    req: &Req,
    audit: Option<(&'static str, Option<&str>, Option<&str>)>,
    f: impl FnOnce(&Repository, &RequestContext) -> Result<T, RepoError> + Send + 'static,
) -> Result<T, Response> {
    let repo = app.repo.clone();
    let ctx = req.ctx.clone();
    match blocking(move || f(&repo, &ctx)).await? {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Some((action, rtype, id)) = audit {
                // A refusal of the access policy names its reason and, when known, the patient: it is one of the
                // decisions their trail shows.
                let (patient, detail) = match &e {
                    RepoError::Forbidden { code, patient, .. } => {
                        (patient.as_deref(), Some(format!("policy={code}")))
                    }
                    _ => (None, None),
                };
                app.repo.audit_failure_about(
                    &req.ctx,
                    (action, rtype, id),
                    patient,
                    e.status(),
                    detail,
                );
            }
            Err(repo_error(&e))
        }
    }
}

/// `Prefer: return=representation` or `return=OperationOutcome` on a batch or transaction: each written entry's
/// answer carries the resource as stored (read back by its version, traced as such) or an informational outcome.
fn answer_entries(
    r: &Repository,
    c: &RequestContext,
    v: &mut Value,
    prefer: PreferReturn,
    methods: &[String],
) -> Result<(), RepoError> {
    let base = c.base_url.trim_end_matches('/').to_string();
    let Some(entries) = v["entry"].as_array_mut() else {
        return Ok(());
    };
    for (k, e) in entries.iter_mut().enumerate() {
        let status = e["response"]["status"].as_str().unwrap_or("").to_string();
        // A conditional create that found its resource wrote nothing: that resource is not the caller's to be
        // handed (its read is not what was asked).
        if methods.get(k).is_some_and(|m| m == "POST") && status.starts_with("200") {
            continue;
        }
        let Some(loc) = e["response"]["location"].as_str().map(str::to_string) else {
            continue;
        };
        if !(status.starts_with("200") || status.starts_with("201")) {
            continue;
        }
        let rel = loc
            .strip_prefix(&base)
            .unwrap_or(&loc)
            .trim_start_matches('/');
        let parts: Vec<&str> = rel.split('/').collect();
        let [t, id, "_history", ver] = parts.as_slice() else {
            continue;
        };
        match prefer {
            PreferReturn::Representation => match r.vread(c, t, id, ver) {
                Ok(s) => e["resource"] = serde_json::from_slice(&s.content).unwrap_or(Value::Null),
                // The entries are written: a read-back that fails is told in that entry, not as a failure of all.
                Err(err) => {
                    e["response"]["outcome"] = OperationOutcome::single(
                        IssueSeverity::Warning,
                        IssueType::Processing,
                        format!("{t}/{id} écrit, relecture impossible : {err}"),
                    )
                    .to_json()
                }
            },
            PreferReturn::Outcome => {
                e["response"]["outcome"] = OperationOutcome::single(
                    IssueSeverity::Information,
                    IssueType::Informational,
                    format!("{t}/{id} : {status}, version {ver}"),
                )
                .to_json();
            }
            PreferReturn::Minimal => {}
        }
    }
    Ok(())
}

async fn bundle(State(app): State<App>, headers: HeaderMap, req: Req, body: Body) -> Response {
    let body = tryr!(json_body(&app, &headers, body).await);
    tryr!(guard::check_bundle(req.caller.as_ref(), &body));
    if dmp::is_provide(&body) {
        return dmp::provide(app, req, body).await;
    }
    let (actor, engine, bg) = tryr!(write_policy(&app, &req));
    let (prefer_given, prefer) = (req.prefer_given, req.prefer_return);
    // The entries only break-glass let through: (type, id, patient).
    let mut opened: Vec<(String, String, String)> = Vec::new();
    if let (Some(actor), Some(e)) = (&actor, &engine) {
        tryr!(policy::bundle_entries_for_users(&body).map_err(|e| repo_error(&e)));
        let entries = body["entry"].as_array().cloned().unwrap_or_default();
        let (e, actor, bg) = (e.clone(), actor.clone(), bg.clone());
        let checked = run(&app, &req, None, move |r, c| {
            let mut opened = Vec::new();
            for en in &entries {
                let res = &en["resource"];
                let rt = res["resourceType"].as_str().unwrap_or("");
                // The entry's target as the Bundle code will read it (absolute URLs, leading slashes).
                let url = en["request"]["url"].as_str().unwrap_or("");
                let (segs, _) = socle_store::bundle::split_url(&socle_store::bundle::relative_url(
                    url,
                    &c.base_url,
                ));
                let (target_type, id) = match segs.as_slice() {
                    [t, i] => (t.as_str(), i.as_str()),
                    _ => (rt, ""),
                };
                let before = if en["request"]["method"] == "PUT" && !id.is_empty() {
                    r.before_write(target_type, id)?
                } else {
                    None
                };
                let write = match before {
                    Some((_, Some(_))) => socle_policy::Write::Update,
                    _ => socle_policy::Write::Create,
                };
                for p in policy::check_write(
                    &e,
                    Some(&actor),
                    write,
                    Some((rt, id, res)),
                    before.as_ref(),
                    bg.as_deref(),
                )? {
                    opened.push((rt.to_string(), id.to_string(), p));
                }
            }
            Ok(opened)
        })
        .await;
        opened = tryr!(checked);
    }
    let v = tryr!(
        run(
            &app,
            &req,
            Some(("transaction", None, None)),
            move |r, c| {
                // Documents' bytes stay as fed, whoever sends the Bundle (users' entries were decided above).
                for en in body["entry"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let method = en["request"]["method"].as_str().unwrap_or("");
                    if !matches!(method, "PUT" | "DELETE" | "PATCH") {
                        continue;
                    }
                    let url = en["request"]["url"].as_str().unwrap_or("");
                    let (segs, query) = socle_store::bundle::split_url(
                        &socle_store::bundle::relative_url(url, &c.base_url),
                    );
                    match segs.as_slice() {
                        [t, id] if t == "Binary" => {
                            let before = r.before_write("Binary", id)?;
                            policy::check_document_content(
                                socle_policy::Write::Update,
                                before.as_ref(),
                            )?;
                        }
                        [t] if t == "Binary" && !query.is_empty() => {
                            return Err(RepoError::Invalid(
                                "Binary : pas de modification ni de suppression conditionnelle (désignez-le par son \
                                 identifiant)"
                                    .into(),
                            ));
                        }
                        _ => {}
                    }
                }
                let methods: Vec<String> = body["entry"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| e["request"]["method"].as_str().unwrap_or("").to_string())
                    .collect();
                let mut v = r.bundle(c, body)?;
                if prefer_given && prefer != PreferReturn::Minimal {
                    answer_entries(r, c, &mut v, prefer, &methods)?;
                }
                for (rt, id, p) in opened {
                    after_break_glass_write(
                        r,
                        c,
                        engine.as_deref(),
                        (&rt, &id),
                        vec![p],
                        bg.as_deref(),
                    );
                }
                Ok(v)
            }
        )
        .await
    );
    fhir_bytes(
        StatusCode::OK,
        serde_json::to_vec(&v).unwrap_or_default(),
        &req,
    )
}

/// The policy pieces a user's write needs: (actor, engine, break-glass reason); `(None, None, None)` for
/// software acting on its own behalf and in development mode.
type WritePolicy = (
    Option<socle_policy::Actor>,
    Option<Arc<socle_policy::Engine>>,
    Option<String>,
);

fn write_policy(app: &App, req: &Req) -> Result<WritePolicy, Response> {
    let actor = policy::actor_of(req.caller.as_ref()).filter(policy::is_user);
    if actor.is_none() {
        return Ok((None, None, None));
    }
    let bg = policy::break_glass(req.break_glass.as_deref(), req.caller.as_ref())
        .map_err(|e| repo_error(&e))?;
    Ok((actor, app.policy.clone(), bg))
}

/// Conditional updates and deletions of patient data pick their target by a search the policy does not
/// decide: users send the resource's id instead.
fn no_conditional_for_users(req: &Req, rtype: &str) -> Result<(), Response> {
    // A document's bytes are changed by nobody (`policy::check_document_content`): a Binary is named by its id.
    if rtype == "Binary" {
        return Err(error(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            "Binary : pas de modification ni de suppression conditionnelle (désignez-le par son identifiant)",
        ));
    }
    let user = matches!(&req.caller, Some(guard::Caller::Token(p)) if p.realm.is_some());
    if user && guard::patient_data(rtype) {
        return Err(error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "opération conditionnelle sur des données patient : réservée aux logiciels agissant pour leur compte ; \
             désignez la ressource par son identifiant",
        ));
    }
    Ok(())
}

async fn create(
    State(app): State<App>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let body = tryr!(resource_body(&app, &rtype, None, &headers, body).await);
    // `If-None-Exist: identifier=…` (some clients send `Type?identifier=…`: the query part is what counts).
    let if_none_exist = headers
        .get("if-none-exist")
        .and_then(|h| h.to_str().ok())
        .map(|s| parse_query(Some(s.split_once('?').map_or(s, |(_, q)| q))));
    let rt = rtype.clone();
    let (actor, engine, bg) = tryr!(write_policy(&app, &req));
    let w = tryr!(
        run(
            &app,
            &req,
            Some(("create", Some(&rtype), None)),
            move |r, c| {
                let mut opened = Vec::new();
                if let Some(e) = &engine {
                    opened = policy::check_write(
                        e,
                        actor.as_ref(),
                        socle_policy::Write::Create,
                        Some((&rt, "", &body)),
                        None,
                        bg.as_deref(),
                    )?;
                }
                let w = r.create(c, &rt, body, if_none_exist.as_deref())?;
                after_break_glass_write(
                    r,
                    c,
                    engine.as_deref(),
                    (&rt, &w.stored.id),
                    opened,
                    bg.as_deref(),
                );
                Ok(w)
            }
        )
        .await
    );
    write_response(&w, &req)
}

async fn update(
    State(app): State<App>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let im = tryr!(write_precondition(&headers));
    let body = tryr!(resource_body(&app, &rtype, Some(&id), &headers, body).await);
    let (rt, i) = (rtype.clone(), id.clone());
    let (actor, engine, bg) = tryr!(write_policy(&app, &req));
    let w = tryr!(
        run(
            &app,
            &req,
            Some(("update", Some(&rtype), Some(&id))),
            move |r, c| {
                let mut opened = Vec::new();
                if let Some(e) = &engine {
                    let before = r.before_write(&rt, &i)?;
                    let write = match before {
                        Some((_, Some(_))) => socle_policy::Write::Update,
                        _ => socle_policy::Write::Create,
                    };
                    opened = policy::check_write(
                        e,
                        actor.as_ref(),
                        write,
                        Some((&rt, &i, &body)),
                        before.as_ref(),
                        bg.as_deref(),
                    )?;
                } else if rt == "Binary" {
                    let before = r.before_write(&rt, &i)?;
                    policy::check_document_content(socle_policy::Write::Update, before.as_ref())?;
                }
                let w = r.update(c, &rt, &i, body, im)?;
                after_break_glass_write(r, c, engine.as_deref(), (&rt, &i), opened, bg.as_deref());
                Ok(w)
            }
        )
        .await
    );
    write_response(&w, &req)
}

/// The query parameters of a conditional interaction (without the output-format ones); never empty.
fn criteria(req: &Req, what: &str) -> Result<Vec<(String, String)>, Response> {
    let c: Vec<(String, String)> = req
        .params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "_format" | "_pretty"))
        .cloned()
        .collect();
    if c.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            format!(
                "{what} sur un type exige des critères de recherche (interaction conditionnelle)"
            ),
        ));
    }
    Ok(c)
}

async fn conditional_update(
    State(app): State<App>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    tryr!(no_conditional_for_users(&req, &rtype));
    let crit = tryr!(criteria(&req, "PUT"));
    let im = tryr!(write_precondition(&headers));
    let body = tryr!(json_body(&app, &headers, body).await);
    let rt = rtype.clone();
    let w = tryr!(
        run(
            &app,
            &req,
            Some(("update", Some(&rtype), None)),
            move |r, c| { r.conditional_update(c, &rt, &crit, body, im) }
        )
        .await
    );
    write_response(&w, &req)
}

fn deleted_response(d: Option<Stored>, req: &Req) -> Response {
    let mut resp = match req.prefer_return {
        PreferReturn::Outcome => {
            let msg = match &d {
                Some(s) => format!("{}/{} supprimé (version {})", s.rtype, s.id, s.version),
                None => "rien à supprimer".to_string(),
            };
            outcome_response(
                StatusCode::OK,
                &OperationOutcome::single(
                    IssueSeverity::Information,
                    IssueType::Informational,
                    msg,
                ),
            )
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    };
    if let Some(s) = &d
        && let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", s.version))
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

async fn delete(
    State(app): State<App>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    req: Req,
) -> Response {
    let im = tryr!(if_match(&headers));
    let (rt, i) = (rtype.clone(), id.clone());
    let (actor, engine, bg) = tryr!(write_policy(&app, &req));
    let d = tryr!(
        run(
            &app,
            &req,
            Some(("delete", Some(&rtype), Some(&id))),
            move |r, c| {
                let mut opened = Vec::new();
                if let Some(e) = &engine {
                    let before = r.before_write(&rt, &i)?;
                    opened = policy::check_write(
                        e,
                        actor.as_ref(),
                        socle_policy::Write::Delete,
                        None,
                        before.as_ref(),
                        bg.as_deref(),
                    )?;
                } else if rt == "Binary" {
                    let before = r.before_write(&rt, &i)?;
                    policy::check_document_content(socle_policy::Write::Delete, before.as_ref())?;
                }
                // A patient with a DMP keeps their record: its documents would be left without their patient.
                if rt == "Patient"
                    && socle_dmp::record::state(r.store(), &i)
                        .map_err(|e| RepoError::Invalid(e.to_string()))?
                        .is_some()
                {
                    return Err(RepoError::Conflict(format!(
                        "Patient/{i} a un DMP : le dossier patient ne se supprime pas (le patient peut fermer son \
                         DMP ; l'identitovigilance fusionne les doublons)"
                    )));
                }
                let d = r.delete(c, &rt, &i, im)?;
                after_break_glass_write(r, c, engine.as_deref(), (&rt, &i), opened, bg.as_deref());
                Ok(d)
            }
        )
        .await
    );
    deleted_response(d, &req)
}

async fn conditional_delete(
    State(app): State<App>,
    Path(rtype): Path<String>,
    req: Req,
) -> Response {
    tryr!(no_conditional_for_users(&req, &rtype));
    let crit = tryr!(criteria(&req, "DELETE"));
    let rt = rtype.clone();
    let d = tryr!(
        run(
            &app,
            &req,
            Some(("delete", Some(&rtype), None)),
            move |r, c| r.conditional_delete(c, &rt, &crit)
        )
        .await
    );
    deleted_response(d, &req)
}

async fn read(
    State(app): State<App>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    req: Req,
) -> Response {
    let shaping = tryr!(read_shaping(&rtype, &req));
    let s = tryr!(point_read(&app, &req, rtype, id, None).await);
    if not_modified(&headers, &s) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        version_headers(&mut r, &s);
        return r;
    }
    shaped_response(&s, &req, shaping)
}

/// A conditional read's answer (RFC 9110): `If-None-Match` (`*`, or a list of ETags one of which is the current
/// version) or, when it is absent, `If-Modified-Since` no earlier than the last change (to the second).
fn not_modified(headers: &HeaderMap, s: &Stored) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        return inm.to_str().is_ok_and(|v| {
            v.trim() == "*"
                || v.split(',')
                    .any(|t| socle_store::bundle::parse_etag(t) == Some(s.version))
        });
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|h| h.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|since| s.last_updated / 1000 <= since.as_secs() as i64)
}

type Shaping = (Option<socle_store::search::Summary>, Option<Vec<String>>);

/// `_summary` / `_elements` of a read, checked before the read (a bad one is a 400, not a read).
fn read_shaping(rtype: &str, req: &Req) -> Result<Shaping, Response> {
    socle_store::search::read_shaping(rtype, &req.params)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.issue_type(), e.to_string()))
}

/// The resource read, shaped by `_summary` / `_elements` when asked (then tagged `SUBSETTED`).
fn shaped_response(s: &Stored, req: &Req, (summary, elements): Shaping) -> Response {
    match socle_store::render::shape_resource(&s.content, summary, elements.as_deref()) {
        Some(v) => {
            let mut resp = fhir_bytes(
                StatusCode::OK,
                serde_json::to_vec(&v).unwrap_or_default(),
                req,
            );
            version_headers(&mut resp, s);
            resp
        }
        None => resource_response(StatusCode::OK, s, req),
    }
}

/// A read by id (`what`: type, id and, for a version read, the version) decided by the policy: the decision in
/// the read's audit record (`note` appended to it); an emergency access (break-glass) gets its own record and a
/// notification to the patient.
fn decided_read(
    r: &Repository,
    c: &RequestContext,
    engine: &socle_policy::Engine,
    actor: &socle_policy::Actor,
    what: (&str, &str, Option<&str>),
    bg: Option<&str>,
    note: &str,
) -> Result<Stored, RepoError> {
    let (rtype, id, version) = what;
    let used_bg = std::cell::Cell::new(None::<String>);
    let check = read_check(engine, actor, bg, note, &used_bg);
    let s = match version {
        Some(v) => r.vread_checked(c, rtype, id, v, &check, policy::is_user(actor))?,
        // The rules the decision needs come with the resource, in its statement.
        None => r.read_checked_with(
            c,
            rtype,
            id,
            &check,
            engine.attach_for(actor, &format!("{rtype}/{id}")).as_ref(),
        )?,
    };
    after_break_glass(r, c, engine, (rtype, id), used_bg.take(), bg);
    Ok(s)
}

/// The policy's check of a read (see [`Repository::read_checked`]); `used_bg` remembers the patient whose data
/// an emergency access (break-glass) opened.
#[allow(clippy::type_complexity)] // a `socle_store::repo::ReadCheck`, unboxed
fn read_check<'a>(
    engine: &'a socle_policy::Engine,
    actor: &'a socle_policy::Actor,
    bg: Option<&'a str>,
    note: &'a str,
    used_bg: &'a std::cell::Cell<Option<String>>,
) -> impl Fn(
    &mut dyn socle_store::SqlConn,
    &Stored,
    Option<&str>,
    Option<&str>,
) -> Result<Option<String>, RepoError>
+ 'a {
    move |conn, s, patient, attached| {
        let d = policy::check(conn, engine, actor, s, patient, bg, attached)?;
        if policy::is_break_glass(&d) {
            used_bg.set(patient.map(str::to_string));
        }
        Ok(Some(format!("policy={}{note}", d.reason.code())))
    }
}

/// After a write that break-glass let through for `patients` ([`policy::check_write`]): each one's distinct
/// audit record and notification.
fn after_break_glass_write(
    r: &Repository,
    c: &RequestContext,
    engine: Option<&socle_policy::Engine>,
    what: (&str, &str),
    patients: Vec<String>,
    bg: Option<&str>,
) {
    if let Some(e) = engine {
        for p in patients {
            after_break_glass(r, c, e, what, Some(p), bg);
        }
    }
}

/// After a read that break-glass opened: its distinct audit record and the patient's notification.
fn after_break_glass(
    r: &Repository,
    c: &RequestContext,
    engine: &socle_policy::Engine,
    (rtype, id): (&str, &str),
    patient: Option<String>,
    bg: Option<&str>,
) {
    if let (Some(patient), Some(reason)) = (patient, bg) {
        r.audit_break_glass(c, rtype, id, &patient, reason);
        let who = c.principal.clone();
        if let Err(e) = engine.rules.notify(
            &patient,
            "break-glass",
            &format!("Accès en urgence à votre dossier par {who} ({rtype}) — motif : {reason}"),
        ) {
            tracing::error!(error = %e, "notification de bris de glace non enregistrée");
        }
    }
}

async fn vread(
    State(app): State<App>,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    req: Req,
) -> Response {
    let shaping = tryr!(read_shaping(&rtype, &req));
    let s = tryr!(point_read(&app, &req, rtype, id, Some(vid)).await);
    shaped_response(&s, &req, shaping)
}

/// A read by id (`version`: of that version), decided by the access policy for users: on the resource read
/// (its patient, its document type); an emergency access (break-glass) gets its own audit record and a
/// notification to the patient. Restricted Annuaire entries are refused to anonymous callers.
async fn point_read(
    app: &App,
    req: &Req,
    rtype: String,
    id: String,
    version: Option<String>,
) -> Result<Stored, Response> {
    let actor = policy::actor_of(req.caller.as_ref());
    let bg = policy::break_glass(req.break_glass.as_deref(), req.caller.as_ref())
        .map_err(|e| repo_error(&e))?;
    let engine = app.policy.clone();
    let s = run_point_read(app, req, move |r, c| {
        let v = version.as_deref();
        let (Some(actor), Some(engine)) = (actor, engine) else {
            return match v {
                Some(v) => r.vread(c, &rtype, &id, v),
                None => r.read(c, &rtype, &id),
            };
        };
        decided_read(r, c, &engine, &actor, (&rtype, &id, v), bg.as_deref(), "")
    })
    .await?;
    if req.caller.as_ref().is_some_and(guard::Caller::is_anonymous) && guard::restricted(&s.content)
    {
        return Err(guard::restricted_response(
            "donnée d'accès restreint de l'Annuaire",
        ));
    }
    Ok(s)
}

/// What a request reading many of a patient's resources is, for [`decide_record`]: the type and id it names
/// (`id` empty for a search), its audit action and a note appended to a refusal's detail, and how the patient's
/// break-glass notice calls it.
struct RecordAccess<'a> {
    rtype: &'a str,
    id: &'a str,
    action: &'a str,
    note: &'a str,
    what: &'a str,
}

/// A user's access to `patient`'s record for a request that reads many of its resources (a search about one
/// patient, `$everything`): the policy's decision — refused: audited and `Forbidden`; by break-glass: its
/// distinct record and the notice to the patient. Returns `policy=<reason>` for the request's audit record.
fn decide_record(
    r: &Repository,
    c: &RequestContext,
    engine: &socle_policy::Engine,
    actor: &socle_policy::Actor,
    bg: Option<&str>,
    patient: &str,
    access: RecordAccess<'_>,
) -> Result<String, RepoError> {
    let target = socle_policy::Target {
        patient: Some(patient.to_string()),
        rtype: Some(access.rtype.to_string()),
        ..Default::default()
    };
    let d = engine
        .decide(actor, &target, bg)
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
    let code = d.reason.code();
    if !d.allowed {
        r.audit_operation(
            c,
            access.action,
            Some(access.rtype),
            Some(patient),
            "403",
            Some(format!("policy={code}{}", access.note)),
        );
        return Err(RepoError::Forbidden {
            patient: None,
            code: code.into(),
            message: format!("accès refusé ({code}) : {}", d.explanation),
        });
    }
    if policy::is_break_glass(&d)
        && let Some(reason) = bg
    {
        r.audit_break_glass(c, access.rtype, access.id, patient, reason);
        let _ = engine.rules.notify(
            patient,
            "break-glass",
            &format!(
                "Accès en urgence à votre dossier par {} ({}) — motif : {reason}",
                c.principal, access.what
            ),
        );
    }
    Ok(format!("policy={code}"))
}

/// Whether `s` is a submission set (List) naming one of the documents `unseen` (hidden from a patient or a legal
/// representative): it would betray them, so it is left out like them.
fn names_unseen(s: &Stored, unseen: &std::collections::HashSet<String>) -> bool {
    s.rtype == "List"
        && !unseen.is_empty()
        && serde_json::from_slice::<Value>(&s.content).is_ok_and(|v| {
            v["entry"].as_array().is_some_and(|items| {
                items.iter().any(|i| {
                    i["item"]["reference"]
                        .as_str()
                        .is_some_and(|r| unseen.contains(r))
                })
            })
        })
}

/// `GET [base]/Patient/{id}/$everything` (`_since`, `_type`, `_count`; paged by `next` links): the patient and
/// every resource of their compartment, in the order they were first written. For a user, decided like a read
/// of each resource (documents masked or hidden from them left out) after a decision on the record.
async fn everything(State(app): State<App>, Path(id): Path<String>, req: Req) -> Response {
    if !socle_fhir::resource::is_valid_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            format!("identifiant de patient invalide : {id}"),
        );
    }
    let bad = |m: String| error(StatusCode::BAD_REQUEST, IssueType::Invalid, m);
    let (mut since, mut types, mut count, mut after, mut snapshot) =
        (None, None, socle_store::search::DEFAULT_COUNT, None, None);
    for (k, v) in &req.params {
        match k.as_str() {
            "_since" => match socle_fhir::index::parse_date_range(v) {
                Some((lo, _)) => since = Some(lo),
                None => return bad(format!("_since invalide : {v}")),
            },
            "_type" => {
                let list: Vec<String> = v.split(',').map(|t| t.trim().to_string()).collect();
                let reg = socle_fhir::search_params::registry();
                if let Some(t) = list.iter().find(|t| {
                    !reg.is_resource_type(t)
                        || (*t != "Patient" && reg.patient_compartment_params(t).is_empty())
                }) {
                    return bad(format!(
                        "_type : {t} n'appartient pas au compartiment Patient"
                    ));
                }
                types = Some(list);
            }
            "_count" => match v.parse::<i64>() {
                Ok(n) if n >= 1 => count = n.min(socle_store::search::MAX_COUNT),
                _ => return bad(format!("_count invalide : {v}")),
            },
            "_cursor" => match v.strip_prefix("after.").and_then(|n| n.parse().ok()) {
                Some(n) => after = Some(n),
                None => return bad(format!("_cursor invalide : {v}")),
            },
            "_snapshot" => match v.parse::<i64>() {
                Ok(n) => snapshot = Some(n),
                Err(_) => return bad(format!("_snapshot invalide : {v}")),
            },
            "_format" | "_pretty" => {}
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!(
                        "paramètre de $everything non pris en charge : {k} (_since, _type, _count)"
                    ),
                );
            }
        }
    }
    let actor = policy::actor_of(req.caller.as_ref()).filter(policy::is_user);
    let bg = match policy::break_glass(req.break_glass.as_deref(), req.caller.as_ref()) {
        Ok(b) => b,
        Err(e) => return repo_error(&e),
    };
    let engine = app.policy.clone();
    let self_params: Vec<(String, String)> = req
        .params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "_cursor" | "_snapshot" | "_format" | "_pretty"))
        .cloned()
        .collect();
    let path = format!("Patient/{id}/$everything");
    let bytes = tryr!(
        run(&app, &req, None, move |r, c| {
            let mut about = None;
            let mut unseen = Default::default();
            if let (Some(actor), Some(engine)) = (&actor, &engine) {
                let decided = decide_record(
                    r,
                    c,
                    engine,
                    actor,
                    bg.as_deref(),
                    &id,
                    RecordAccess {
                        rtype: "Patient",
                        id: &id,
                        action: "operation",
                        note: "; $everything",
                        what: "dossier complet",
                    },
                )?;
                about = Some(decided);
                if matches!(
                    actor,
                    socle_policy::Actor::Patient { .. }
                        | socle_policy::Actor::Representative { .. }
                ) {
                    unseen = rules::unseen_targets(engine, Some(actor), &id)?;
                }
            }
            let unseen: std::collections::HashSet<String> = unseen;
            // Each resource decided like a read of it; a submission set naming a document hidden from the
            // patient is left out like the document.
            let mut keep =
                |c: &mut dyn socle_store::SqlConn, s: &Stored, p: Option<&str>, _: bool| {
                    if names_unseen(s, &unseen) {
                        return Ok(false);
                    }
                    match (&actor, &engine) {
                        (Some(actor), Some(engine)) => Ok(p == Some(id.as_str())
                            && engine
                                .decide_in(c, actor, &policy::target_of(s, p), bg.as_deref())?
                                .allowed),
                        _ => Ok(true),
                    }
                };
            let page = r.everything(
                c,
                &id,
                types.as_deref(),
                since,
                count,
                after,
                snapshot,
                about.as_deref(),
                Some(&mut keep as &mut socle_store::repo::Keep<'_>),
            )?;
            let next = page.after.map(|a| {
                let mut p = self_params.clone();
                p.push(("_snapshot".into(), page.snapshot.to_string()));
                p.push(("_cursor".into(), format!("after.{a}")));
                p
            });
            let mut self_link = self_params.clone();
            if let Some(a) = after {
                self_link.push(("_snapshot".into(), page.snapshot.to_string()));
                self_link.push(("_cursor".into(), format!("after.{a}")));
            }
            let sp = socle_store::repo::SearchPage {
                matches: page.matches,
                next,
                self_params: self_link,
                ..Default::default()
            };
            Ok(socle_store::render::searchset(&c.base_url, &path, &sp))
        })
        .await
    );
    fhir_bytes(StatusCode::OK, bytes, &req)
}

/// A search of `rtype`; `compartment`: within that patient's compartment (`Patient/{id}/{rtype}`).
async fn search_common(
    app: App,
    rtype: String,
    req: Req,
    params: Vec<(String, String)>,
    compartment: Option<String>,
) -> Response {
    let path = match &compartment {
        Some(id) => format!("Patient/{id}/{rtype}"),
        None => rtype.clone(),
    };
    // A patient's search of `AuditEvent` is their access trail: who read or wrote what of their record (in a
    // compartment search, only their own compartment's).
    if rtype == "AuditEvent"
        && let Some(own) = own_trail(&req)
    {
        if compartment.as_ref().is_some_and(|c| *c != own) {
            return error(
                StatusCode::FORBIDDEN,
                IssueType::Forbidden,
                "trace d'accès : seule celle de votre propre dossier vous est accessible",
            );
        }
        return match trail_query(&params, Some(own), TrailApi::Search, req.strict) {
            Ok(q) => audit_trail_common(&app, q, &req).await,
            Err(r) => r,
        };
    }
    let mut params = params;
    let strict = req.strict;
    // Anonymous callers (public Annuaire) never see restricted entries, as matches or as includes.
    let anonymous = req.caller.as_ref().is_some_and(guard::Caller::is_anonymous);
    if anonymous {
        // The guard saw the URL; a POST `_search` body may add `_has` or `_revinclude` from other types.
        if !guard::params_stay_public(&rtype, &params) {
            return guard::restricted_response(
                "_has, _include ou _revinclude vers des données non publiques",
            );
        }
        params.extend(guard::public_filter());
    }
    // Users' searches on patient data are about one patient, decided by the policy engine; documents in the
    // results are decided one by one (masks, matrix, visibility).
    let user_actor = policy::actor_of(req.caller.as_ref()).filter(policy::is_user);
    let user = user_actor.is_some();
    // A user's search of other data (the Annuaire, terminology) filters on patient data nowhere: no `_has` towards
    // it (includes of it are left out below).
    if user
        && !guard::patient_data(&rtype)
        && let Some(m) = policy::has_on_patient_data(&params)
    {
        return error(StatusCode::FORBIDDEN, IssueType::Forbidden, m);
    }
    let actor = user_actor.filter(|_| guard::patient_data(&rtype));
    let scope = match (&actor, compartment.clone()) {
        // The compartment names the patient (the results are theirs: see `keep`).
        (Some(_), Some(id)) => match policy::compartment_patient(&rtype, &params, id) {
            Ok(p) => Some(p),
            Err(m) => return error(StatusCode::FORBIDDEN, IssueType::Forbidden, m),
        },
        (Some(_), None) => match policy::search_patient(&rtype, &params) {
            Ok(p) => Some(p),
            Err(m) => return error(StatusCode::FORBIDDEN, IssueType::Forbidden, m),
        },
        (None, _) => None,
    };
    let bg = match policy::break_glass(req.break_glass.as_deref(), req.caller.as_ref()) {
        Ok(b) => b,
        Err(e) => return repo_error(&e),
    };
    let engine = app.policy.clone();
    let hidden = if anonymous {
        guard::restricted_labels()
    } else {
        Vec::new()
    };
    let bytes = tryr!(
        run(&app, &req, None, move |r, c| {
            let mut decision = None;
            if let (Some(actor), Some(patient), Some(engine)) = (&actor, &scope, &engine) {
                let what = format!("recherche {rtype}");
                let decided = decide_record(r, c, engine, actor, bg.as_deref(), patient, RecordAccess {
                    rtype: &rtype,
                    id: "",
                    action: "search-type",
                    note: "",
                    what: &what,
                })?;
                decision = Some((patient.clone(), decided));
            }
            // What the caller may receive, decided on the search's connection before includes are gathered from
            // the matches (an include reached only through a refused match never comes through): for a user's
            // search about one patient, that patient's data decided like reads (documents: matrix, masks,
            // visibility) — another patient's data never, and outside any patient only the Annuaire and reference
            // data (a Binary, a Provenance or a List outside the compartment may carry anyone's); for a user's
            // other searches, no patient data among the includes; for anonymous callers, no restricted entry.
            // Nothing says how much was left out: a masked document's existence is not betrayed.
            // A submission set (List) names its documents: for a patient or a legal representative, one that
            // names a document hidden from them would betray it — left out like the document.
            let unseen = match (&actor, &scope, &engine) {
                (Some(a @ (socle_policy::Actor::Patient { .. } | socle_policy::Actor::Representative { .. })),
                 Some(p), Some(e)) => rules::unseen_targets(e, Some(a), p)?,
                _ => Default::default(),
            };
            let mut keep = |c: &mut dyn socle_store::SqlConn, s: &Stored, p: Option<&str>, is_match: bool| {
                // Anonymous callers receive the public Annuaire only: whatever an Annuaire resource references
                // (a reference's type is not checked against its parameter's targets when written), includes
                // of other types never come through.
                if anonymous
                    && !is_match
                    && (guard::restricted(&s.content) || !guard::PUBLIC_TYPES.contains(&s.rtype.as_str()))
                {
                    return Ok(false);
                }
                if names_unseen(s, &unseen) {
                    return Ok(false);
                }
                if let (Some(actor), Some(patient), Some(engine)) = (&actor, &scope, &engine) {
                    return Ok(match p {
                        Some(p) => {
                            p == patient
                                && (s.rtype != "DocumentReference"
                                    || engine
                                        .decide_in(c, actor, &policy::target_of(s, Some(p)), bg.as_deref())?
                                        .allowed)
                        }
                        None => is_match || policy::shareable_outside_patients(&s.rtype),
                    });
                }
                Ok(!user || is_match || (p.is_none() && policy::shareable_outside_patients(&s.rtype)))
            };
            let filtered = anonymous || user;
            let mut page = r.search_about(
                c,
                &rtype,
                &params,
                strict,
                &hidden,
                decision.as_ref().map(|(p, d)| (p.as_str(), d.as_str())),
                filtered.then_some((&mut keep as &mut socle_store::repo::Keep<'_>, scope.is_some())),
                compartment.as_deref(),
            )?;
            if user && scope.is_none() && policy::asks_patient_includes(&params) {
                // Said from the request alone (what was found is not betrayed).
                page.warnings.push((
                    IssueType::Suppressed,
                    "les inclusions de données patient ne sont servies que dans une recherche portant sur un patient"
                        .into(),
                ));
            }
            Ok(socle_store::render::searchset(&c.base_url, &path, &page))
        })
        .await
    );
    fhir_bytes(StatusCode::OK, bytes, &req)
}

async fn search_get(State(app): State<App>, Path(rtype): Path<String>, req: Req) -> Response {
    let params = req.params.clone();
    search_common(app, rtype, req, params, None).await
}

/// `GET [base]/Patient/{id}/{type}`: the search of `type` within the patient's compartment (the resources that
/// reference the patient through the type's compartment parameters), with any other search parameters.
async fn compartment_search(
    State(app): State<App>,
    Path((owner, id, rtype)): Path<(String, String, String)>,
    uri: axum::http::Uri,
    req: Req,
) -> Response {
    if rtype.starts_with('$') || owner.starts_with('$') || id.starts_with('$') {
        return not_found(uri).await;
    }
    let registry = socle_fhir::search_params::registry();
    if !registry.is_resource_type(&owner) || !registry.is_resource_type(&rtype) && rtype != "*" {
        return not_found(uri).await;
    }
    if owner != "Patient" {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            format!(
                "recherche dans le compartiment {owner} non prise en charge : seul le compartiment Patient l'est"
            ),
        );
    }
    if rtype == "*" {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            "recherche de tous les types d'un compartiment non prise en charge : précisez le type \
             (Patient/{id}/Observation…)",
        );
    }
    if !socle_fhir::resource::is_valid_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            format!("identifiant de patient invalide : {id}"),
        );
    }
    if rtype != "Patient" && registry.patient_compartment_params(&rtype).is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            format!("le type {rtype} n'appartient pas au compartiment Patient"),
        );
    }
    let params = req.params.clone();
    search_common(app, rtype, req, params, Some(id)).await
}

async fn search_post(
    State(app): State<App>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() && !ct.starts_with("application/x-www-form-urlencoded") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "POST _search attend un corps application/x-www-form-urlencoded",
        );
    }
    let bytes = tryr!(read_body(&app, body).await);
    if !std::str::from_utf8(&bytes).is_ok_and(query_is_utf8) {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "corps de _search mal encodé : une fois décodé (%XX), il n'est pas de l'UTF-8 valide",
        );
    }
    let mut params = req.params.clone();
    // More than the limit is refused by the search itself: the rest of a huge body is not even split.
    params.extend(
        form_urlencoded::parse(&bytes)
            .into_owned()
            .take(socle_store::search::MAX_SEARCH_PARAMS + 1),
    );
    search_common(app, rtype, req, params, None).await
}

async fn history_common(app: App, req: Req, scope: (Option<String>, Option<String>)) -> Response {
    let params = req.params.clone();
    // A user's history of one resource: every version decided like a read (the guard keeps users from the
    // histories of a type or of the system).
    let actor = policy::actor_of(req.caller.as_ref());
    let bg = match policy::break_glass(req.break_glass.as_deref(), req.caller.as_ref()) {
        Ok(b) => b,
        Err(e) => return repo_error(&e),
    };
    let engine = app.policy.clone();
    let anonymous = req.caller.as_ref().is_some_and(guard::Caller::is_anonymous);
    let bytes = tryr!(
        run(&app, &req, None, move |r, c| {
            let (path, sc) = match (&scope.0, &scope.1) {
                (Some(t), Some(i)) => (format!("{t}/{i}/_history"), HistoryScope::Instance(t, i)),
                (Some(t), None) => (format!("{t}/_history"), HistoryScope::Type(t)),
                _ => ("_history".to_string(), HistoryScope::System),
            };
            let page = match (&actor, &engine, &scope) {
                (Some(actor), Some(engine), (Some(t), Some(i))) => {
                    let used_bg = std::cell::Cell::new(None::<String>);
                    let check = read_check(engine, actor, bg.as_deref(), "", &used_bg);
                    let page =
                        r.history_checked(c, sc, &params, Some((&check, policy::is_user(actor))))?;
                    after_break_glass(r, c, engine, (t, i), used_bg.take(), bg.as_deref());
                    page
                }
                _ => r.history(c, sc, &params)?,
            };
            if anonymous && page.entries.iter().any(|s| guard::restricted(&s.content)) {
                return Err(RepoError::Forbidden {
                    patient: None,
                    code: "restricted".into(),
                    message: "donnée d'accès restreint de l'Annuaire".into(),
                });
            }
            Ok(socle_store::render::history(&c.base_url, &path, &page))
        })
        .await
    );
    fhir_bytes(StatusCode::OK, bytes, &req)
}

async fn history_system(State(app): State<App>, req: Req) -> Response {
    history_common(app, req, (None, None)).await
}

async fn history_type(State(app): State<App>, Path(rtype): Path<String>, req: Req) -> Response {
    history_common(app, req, (Some(rtype), None)).await
}

async fn history_instance(
    State(app): State<App>,
    Path((rtype, id)): Path<(String, String)>,
    req: Req,
) -> Response {
    history_common(app, req, (Some(rtype), Some(id))).await
}

// ------------------------------------------------------------------ audit trail as AuditEvent
//
// Socle's own trail is served by the `$audit-trail` operation (system level, and per patient:
// `GET /fhir/Patient/{id}/$audit-trail`). `AuditEvent` stays an ordinary resource type, so that audit events
// from other systems can be stored and searched like any resource.

async fn audit_trail_record(State(app): State<App>, Path(seq): Path<String>, req: Req) -> Response {
    let repo = app.repo.clone();
    let id = seq.clone();
    let res = tryr!(blocking(move || repo.audit_event(&id)).await);
    match res {
        Ok(Some(v)) => fhir_bytes(
            StatusCode::OK,
            serde_json::to_vec(&v).unwrap_or_default(),
            &req,
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            IssueType::NotFound,
            format!("enregistrement d'audit {seq} introuvable"),
        ),
        Err(e) => repo_error(&e),
    }
}

async fn audit_trail(State(app): State<App>, req: Req) -> Response {
    let params = req.params.clone();
    match trail_query(&params, None, TrailApi::Operation, req.strict) {
        Ok(q) => audit_trail_common(&app, q, &req).await,
        Err(r) => r,
    }
}

async fn patient_audit_trail(State(app): State<App>, Path(id): Path<String>, req: Req) -> Response {
    let params = req.params.clone();
    match trail_query(&params, Some(id), TrailApi::PatientOperation, req.strict) {
        Ok(q) => audit_trail_common(&app, q, &req).await,
        Err(r) => r,
    }
}

/// The patient whose trail a search of `AuditEvent` reads: a patient's (or their legal representative's)
/// token reads the trail of their own record there, as `GET [base]/Patient/{id}/$audit-trail` does.
fn own_trail(req: &Req) -> Option<String> {
    match req.caller.as_ref()? {
        guard::Caller::Token(p) if p.realm == Some(socle_auth::Realm::Patient) => {
            p.claim("patient").map(str::to_string)
        }
        _ => None,
    }
}

/// Where a reading of the trail was asked (its parameters and its links follow).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TrailApi {
    /// `GET [base]/$audit-trail`
    Operation,
    /// `GET [base]/Patient/{id}/$audit-trail`
    PatientOperation,
    /// `GET [base]/AuditEvent?…` by a patient (their own trail)
    Search,
}

/// A reading of the trail: whose, how many, from where, over which period.
struct TrailQuery {
    api: TrailApi,
    patient: Option<String>,
    count: i64,
    cursor: socle_store::repo::TrailCursor,
    window: socle_store::audit::Window,
    /// The `date` parameters as given, for the next page's link.
    dates: Vec<String>,
    /// Parameters ignored (a search without `Prefer: handling=strict`).
    ignored: Vec<String>,
}

/// Reads the parameters of a reading of the trail: `patient`, `date` (repeatable; prefixes `eq`, `ge`, `gt`,
/// `le`, `lt`, `sa`, `eb`, with the value's precision), `_count`, `page` (given by the `next` link), `_sort`
/// (`-date` only: the trail is read newest first).
fn trail_query(
    params: &[(String, String)],
    fixed: Option<String>,
    api: TrailApi,
    strict: bool,
) -> Result<TrailQuery, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, IssueType::Invalid, m);
    let mut q = TrailQuery {
        api,
        patient: fixed.clone(),
        count: 50,
        cursor: socle_store::repo::TrailCursor::default(),
        window: socle_store::audit::Window::default(),
        dates: Vec::new(),
        ignored: Vec::new(),
    };
    for (k, v) in params {
        match k.as_str() {
            "patient" | "patient:Patient"
                if api != TrailApi::PatientOperation || fixed.is_none() =>
            {
                let id = v
                    .rsplit_once("Patient/")
                    .map_or(v.as_str(), |(_, id)| id)
                    .to_string();
                match &fixed {
                    Some(own) if *own != id => {
                        return Err(error(
                            StatusCode::FORBIDDEN,
                            IssueType::Forbidden,
                            "un patient ne lit que la trace des accès à son propre dossier",
                        ));
                    }
                    _ => q.patient = Some(id),
                }
            }
            "date" => {
                let (prefix, value) = match v.get(..2) {
                    Some(p @ ("eq" | "ge" | "gt" | "le" | "lt" | "sa" | "eb")) => (p, &v[2..]),
                    Some("ne" | "ap") => {
                        return Err(bad(format!(
                            "date : préfixe non pris en charge pour la trace : {v} (eq, ge, gt, le, lt, sa, eb)"
                        )));
                    }
                    _ => ("eq", v.as_str()),
                };
                let Some((lo, hi)) = socle_fhir::index::parse_date_range(value) else {
                    return Err(bad(format!(
                        "date invalide : {v} (attendu AAAA, AAAA-MM, AAAA-MM-JJ ou une date et heure, avec un \
                         préfixe éventuel)"
                    )));
                };
                let w = &mut q.window;
                match prefix {
                    "eq" => {
                        w.from = w.from.max(lo);
                        w.to = w.to.min(hi);
                    }
                    "ge" => w.from = w.from.max(lo),
                    "gt" | "sa" => w.from = w.from.max(hi.saturating_add(1)),
                    "le" => w.to = w.to.min(hi),
                    _ => w.to = w.to.min(lo.saturating_sub(1)),
                }
                q.dates.push(v.clone());
            }
            "_count" => match v.parse::<i64>() {
                Ok(n) if n >= 0 => q.count = n.min(1000),
                _ => return Err(bad(format!("_count invalide : {v}"))),
            },
            "page" => {
                let parsed = v.split_once('.').and_then(|(w, l)| {
                    Some(socle_store::repo::TrailCursor {
                        write: w.parse().ok()?,
                        log: l.parse().ok()?,
                    })
                });
                match parsed {
                    Some(c) => q.cursor = c,
                    None => {
                        return Err(bad(format!(
                            "page invalide : {v} (donnée par le lien « next » de la page précédente)"
                        )));
                    }
                }
            }
            "_sort" if v == "-date" => {}
            "_sort" => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!(
                        "_sort={v} : la trace se lit de la plus récente à la plus ancienne (_sort=-date)"
                    ),
                ));
            }
            "_format" | "_pretty" | "_total" => {}
            other if api == TrailApi::Search && !strict => q.ignored.push(other.to_string()),
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!(
                        "trace d'accès : paramètre non pris en charge {other} (patient, date, _count, _sort=-date, \
                         page)"
                    ),
                ));
            }
        }
    }
    Ok(q)
}

/// The trail, newest first, as a Bundle of BALP-shaped `AuditEvent`s.
async fn audit_trail_common(app: &App, q: TrailQuery, req: &Req) -> Response {
    let TrailQuery {
        api,
        patient,
        count,
        cursor,
        window,
        ..
    } = &q;
    let (patient, count, cursor, window) = (patient.clone(), *count, *cursor, *window);
    let repo = app.repo.clone();
    // What is hidden from a patient or a legal representative stays hidden in the trail: the records about a
    // document not yet announced, or hidden from representatives, would betray its existence.
    let actor = policy::actor_of(req.caller.as_ref());
    let engine = app.policy.clone();
    let who = patient.clone();
    let res = tryr!(
        blocking(move || {
            let (events, next) =
                repo.audit_events_page(patient.as_deref(), count, cursor, window)?;
            let (Some(engine), Some(p)) = (engine, patient.as_deref()) else {
                return Ok((events, next));
            };
            let unseen = rules::unseen_targets(&engine, actor.as_ref(), p)?;
            if unseen.is_empty() {
                return Ok((events, next));
            }
            let events = events
                .into_iter()
                .filter(|e| {
                    !e["entity"].as_array().is_some_and(|ents| {
                        ents.iter().any(|x| {
                            let r = x["what"]["reference"].as_str().unwrap_or("");
                            let r = r.split("/_history/").next().unwrap_or(r);
                            unseen.contains(r)
                        })
                    })
                })
                .collect();
            Ok((events, next))
        })
        .await
    );
    match res {
        Ok((events, next)) => {
            let base = &req.ctx.base_url;
            let entries: Vec<Value> = events
                .into_iter()
                .map(|e| {
                    let id = e.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                    serde_json::json!({"fullUrl": format!("{base}/$audit-trail/{id}"), "resource": e, "search": {"mode": "match"}})
                })
                .collect();
            let mut b = serde_json::json!({"resourceType": "Bundle", "type": "searchset"});
            if let Some(n) = next {
                let mut url = match (&who, api) {
                    (Some(p), TrailApi::PatientOperation) => {
                        format!("{base}/Patient/{p}/$audit-trail?_count={count}")
                    }
                    (Some(p), TrailApi::Search) => {
                        format!("{base}/AuditEvent?patient={p}&_count={count}")
                    }
                    (Some(p), _) => format!("{base}/$audit-trail?patient={p}&_count={count}"),
                    (None, _) => format!("{base}/$audit-trail?_count={count}"),
                };
                for d in &q.dates {
                    url.push_str("&date=");
                    url.extend(form_urlencoded::byte_serialize(d.as_bytes()));
                }
                b["link"] = serde_json::json!([{"relation": "next", "url": format!("{url}&page={}.{}", n.write, n.log)}]);
            } else if cursor == socle_store::repo::TrailCursor::default() {
                // One page holds the whole trail: its size is the total.
                b["total"] = entries.len().into();
            }
            let mut entries = entries;
            if !q.ignored.is_empty() {
                entries.push(serde_json::json!({"resource": {"resourceType": "OperationOutcome", "issue": [{
                    "severity": "warning", "code": "not-supported",
                    "diagnostics": format!("paramètres ignorés par la trace d'accès : {} (pris en charge : patient, date, \
                        _count, _sort=-date)", q.ignored.join(", "))}]},
                    "search": {"mode": "outcome"}}));
            }
            if !entries.is_empty() {
                b["entry"] = Value::Array(entries);
            }
            fhir_bytes(
                StatusCode::OK,
                serde_json::to_vec(&b).unwrap_or_default(),
                req,
            )
        }
        Err(e) => repo_error(&e),
    }
}
