//! The OpenID Connect endpoints of both realms (`/auth/pro/…`, `/auth/patient/…`) and their French login
//! pages. The protocol logic is in `socle_auth::Provider`; this module maps HTTP onto it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::Value;
use socle_auth::{
    AuthResult, AuthorizeError, AuthorizeRequest, ClientAuth, LoginError, LoginStep, Provider,
    Realm, TokenError,
};

use super::App;

/// Largest form accepted by these endpoints.
const MAX_FORM: usize = 64 * 1024;

pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/auth/{realm}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/auth/{realm}/jwks", get(jwks))
        .route(
            "/auth/{realm}/authorize",
            get(authorize_get).post(authorize_post),
        )
        .route(
            "/auth/{realm}/authorize/totp",
            axum::routing::post(totp_post),
        )
        .route("/auth/{realm}/token", axum::routing::post(token))
        .route("/auth/{realm}/userinfo", get(userinfo).post(userinfo))
        .route("/auth/{realm}/introspect", axum::routing::post(introspect))
        .route("/auth/{realm}/revoke", axum::routing::post(revoke))
        .route("/auth/{realm}/logout", get(logout).post(logout))
        .route(
            "/auth/{realm}/activate",
            get(activate_get).post(activate_post),
        )
        .route("/auth/{realm}/consent", axum::routing::post(consent_post))
        .route("/auth/{realm}/record", axum::routing::post(record_post))
        .route("/auth/{realm}/consents", get(consents_list))
        .route(
            "/auth/{realm}/consents/revoke",
            axum::routing::post(consents_revoke),
        )
}

// ------------------------------------------------------------------ helpers

fn provider(app: &App) -> Result<Arc<Provider>, Response> {
    app.auth.clone().ok_or_else(|| {
        json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "error_description": "authentification désactivée sur ce serveur"}),
        )
    })
}

/// The provider and the realm a request names (404 when either is missing).
fn endpoint(app: &App, realm: &str) -> Result<(Arc<Provider>, Realm), Response> {
    Ok((provider(app)?, realm_of(realm)?))
}

fn realm_of(s: &str) -> Result<Realm, Response> {
    Realm::parse(s).ok_or_else(|| {
        json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "error_description": format!("domaine inconnu : « {s} » (pro ou patient)")}),
        )
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, Body::from(v.to_string())).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn token_error(e: &TokenError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = json_response(
        status,
        &serde_json::json!({"error": e.code, "error_description": e.description}),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"socle\""),
        );
    }
    r
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": "server_error"}),
        )
    })
}

/// The form fields of a POST (`application/x-www-form-urlencoded`), at most `MAX_FORM` bytes.
async fn form_of(req: Request) -> Result<(HeaderMap, Vec<(String, String)>), Response> {
    let (parts, body) = req.into_parts();
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &serde_json::json!({"error": "invalid_request", "error_description": "corps attendu : application/x-www-form-urlencoded"}),
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": "invalid_request", "error_description": "formulaire trop volumineux"}),
        )
    })?;
    let form = form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((parts.headers, form))
}

fn field<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `Authorization: Basic` credentials, each part form-url-decoded (RFC 6749 §2.3.1).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

fn bearer(headers: &HeaderMap, form: &[(String, String)]) -> Option<String> {
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        && let Some((s, t)) = h.split_once(' ')
        && s.eq_ignore_ascii_case("bearer")
    {
        return Some(t.trim().to_string());
    }
    field(form, "access_token").map(str::to_string)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn session_cookie(realm: Realm) -> String {
    format!("socle_session_{}", realm.as_str())
}

fn set_cookie(r: &mut Response, app: &App, realm: Realm, name: &str, value: &str, max_age: i64) {
    let secure = if app.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let c = format!(
        "{name}={value}; Path=/auth/{}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        realm.as_str()
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn realm_title(realm: Realm) -> &'static str {
    match realm {
        Realm::Pro => "Socle — espace professionnel de santé",
        Realm::Patient => "Socle — mon espace santé",
    }
}

/// A complete, accessible HTML page (French, one `h1`, labelled fields, errors announced).
fn page(status: StatusCode, realm: Realm, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} — {site}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#161616;line-height:1.5}}\
         h1{{font-size:1.5rem}} label{{display:block;margin-top:1rem;font-weight:600}}\
         input{{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box;border:1px solid #3a3a3a;border-radius:4px}}\
         input[type=radio]{{width:auto;margin-right:.5rem}} fieldset div label{{display:inline;font-weight:400}}\
         button{{margin-top:1.5rem;font-size:1rem;padding:.6rem 1.2rem;background:#000091;color:#fff;border:0;border-radius:4px;cursor:pointer}}\
         button:focus,input:focus,a:focus{{outline:3px solid #0a76f6;outline-offset:2px}}\
         .erreur{{color:#ce0500;border-left:4px solid #ce0500;padding-left:.75rem}} .aide{{color:#3a3a3a;font-size:.9rem}}\
         code{{word-break:break-all;background:#eee;padding:.1rem .3rem}}</style></head>\
         <body><header><p>{site}</p></header><main id=\"contenu\"><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
        site = escape(realm_title(realm)),
    );
    let mut r = (status, Body::from(html)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        // No `form-action`: browsers apply it to the redirect that follows a form, and the login ends with a
        // redirect to the application (another origin). Found by the headless-browser test.
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

fn error_text(msg: &str) -> String {
    format!(
        "<p class=\"erreur\" role=\"alert\" id=\"erreur\">{}</p>",
        escape(msg)
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

const AUTHORIZE_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "acr_values",
    "prompt",
];

fn login_form(
    realm: Realm,
    req: &AuthorizeRequest,
    q: &[(String, String)],
    csrf: &str,
    err: Option<&str>,
    login: &str,
) -> String {
    let hidden_fields: String = q
        .iter()
        .filter(|(k, _)| AUTHORIZE_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| hidden(k, v))
        .collect();
    let (label, help, mode) = match realm {
        Realm::Pro => (
            "Identifiant (numéro RPPS)",
            "Les 11 chiffres de votre numéro RPPS.",
            "numeric",
        ),
        Realm::Patient => (
            "Identifiant (matricule INS)",
            "Les 15 chiffres de votre matricule INS, sans espace.",
            "numeric",
        ),
    };
    let described = if err.is_some() {
        "aide-identifiant erreur"
    } else {
        "aide-identifiant"
    };
    format!(
        "<p>L'application <strong>{client}</strong> demande à accéder à vos données de santé en votre nom.</p>\
         {err}<form method=\"post\" action=\"/auth/{realm}/authorize\" novalidate>{hidden_fields}{csrf_field}\
         <label for=\"login\">{label}</label><p class=\"aide\" id=\"aide-identifiant\">{help}</p>\
         <input id=\"login\" name=\"login\" autocomplete=\"username\" inputmode=\"{mode}\" required aria-describedby=\"{described}\" value=\"{login}\">\
         <label for=\"password\">Mot de passe</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Se connecter</button></form>\
         <p class=\"aide\">Accès demandé : <code>{scope}</code></p>",
        client = escape(&req.client_name),
        err = err.map(error_text).unwrap_or_default(),
        realm = realm.as_str(),
        csrf_field = hidden("csrf", csrf),
        login = escape(login),
        scope = escape(&req.scope),
    )
}

fn totp_form(realm: Realm, pending: &str, csrf: &str, err: Option<&str>) -> String {
    format!(
        "<p>Saisissez le code à 6 chiffres affiché par votre application d'authentification.</p>{err}\
         <form method=\"post\" action=\"/auth/{realm}/authorize/totp\" novalidate>{p}{c}\
         <label for=\"code\">Code à usage unique</label>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" required>\
         <button type=\"submit\">Valider</button></form>",
        err = err.map(error_text).unwrap_or_default(),
        realm = realm.as_str(),
        p = hidden("pending", pending),
        c = hidden("csrf", csrf),
    )
}

fn redirect(url: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    let mut url = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        url.push(sep);
        url.push_str(k);
        url.push('=');
        url.push_str(&url_encode(v));
        sep = '&';
    }
    url
}

/// The authorization request a form carries back (its parameters as hidden fields), checked again.
fn posted_request(
    p: &Provider,
    realm: Realm,
    form: &[(String, String)],
) -> Result<(Vec<(String, String)>, AuthorizeRequest), Response> {
    let q: Vec<(String, String)> = form
        .iter()
        .filter(|(k, _)| AUTHORIZE_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect();
    match p.check_authorize(realm, &q) {
        Ok(r) => Ok((q, r)),
        Err(e) => Err(authorize_error(p, realm, e)),
    }
}

fn authorize_error(p: &Provider, realm: Realm, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Display(msg) => page(
            StatusCode::BAD_REQUEST,
            realm,
            "Demande de connexion invalide",
            &format!(
                "{}<p>Revenez à l'application et recommencez.</p>",
                error_text(&msg)
            ),
        ),
        AuthorizeError::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            let iss = p.issuer(realm);
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
                ("iss", iss.as_str()),
            ];
            if let Some(s) = &state {
                params.push(("state", s));
            }
            redirect(&with_params(&redirect_uri, &params))
        }
    }
}

/// The data scopes of a request in plain French.
fn scope_words(scope: &str) -> Vec<String> {
    let scopes = socle_auth::Scopes::parse(scope).unwrap_or_default();
    scopes
        .0
        .iter()
        .filter_map(|s| match s {
            socle_auth::Scope::Resource { rtype, perms, .. } => {
                let what = rtype
                    .as_deref()
                    .map_or("toutes vos données de santé".to_string(), |t| {
                        format!("vos données de type {t}")
                    });
                let mut verbs = Vec::new();
                if perms & 2 != 0 || perms & 16 != 0 {
                    verbs.push("consulter");
                }
                if perms & 1 != 0 {
                    verbs.push("ajouter");
                }
                if perms & 4 != 0 {
                    verbs.push("modifier");
                }
                if perms & 8 != 0 {
                    verbs.push("supprimer");
                }
                Some(format!("{} {what}", verbs.join(", ")))
            }
            _ => None,
        })
        .collect()
}

/// The validated authorization request, as the hidden fields of a form that carries it to the next step.
fn request_fields(req: &AuthorizeRequest) -> String {
    [
        ("client_id", Some(req.client_id.as_str())),
        ("redirect_uri", Some(req.redirect_uri.as_str())),
        ("response_type", Some("code")),
        ("scope", Some(req.scope.as_str())),
        ("state", req.state.as_deref()),
        ("nonce", req.nonce.as_deref()),
        ("code_challenge", Some(req.code_challenge.as_str())),
        ("code_challenge_method", Some("S256")),
        ("acr_values", req.acr_values.as_deref()),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| hidden(k, v)))
    .collect()
}

fn consent_form(req: &AuthorizeRequest, csrf: &str) -> String {
    let items: String = scope_words(&req.scope)
        .iter()
        .map(|w| format!("<li>{}</li>", escape(w)))
        .collect();
    format!(
        "<p>L'application <strong>{client}</strong> demande à :</p><ul>{items}</ul>\
         <p>Vous seul décidez. Vous pourrez retirer cette autorisation à tout moment ; l'application perdra alors \
         l'accès immédiatement.</p>\
         <form method=\"post\" action=\"/auth/{realm}/consent\">{fields}{c}\
         <button type=\"submit\" name=\"decision\" value=\"accept\">Autoriser</button> \
         <button type=\"submit\" name=\"decision\" value=\"refuse\">Refuser</button></form>",
        client = escape(&req.client_name),
        realm = req.realm.as_str(),
        fields = request_fields(req),
        c = hidden("csrf", csrf),
    )
}

/// The choice of record, for an account that represents other persons (a parent, a guardian): their own, or
/// the record of one of the persons they represent.
fn record_form(
    req: &AuthorizeRequest,
    represented: &[socle_auth::Represented],
    csrf: &str,
) -> String {
    let mut choices = String::from(
        "<div><input type=\"radio\" id=\"dossier-self\" name=\"dossier\" value=\"self\" checked>\
         <label for=\"dossier-self\">Mon propre dossier</label></div>",
    );
    for (i, r) in represented.iter().enumerate() {
        choices.push_str(&format!(
            "<div><input type=\"radio\" id=\"dossier-{i}\" name=\"dossier\" value=\"{v}\">\
             <label for=\"dossier-{i}\">Le dossier de {name}, que je représente légalement</label></div>",
            v = escape(&r.patient),
            name = escape(&r.name),
        ));
    }
    format!(
        "<p>Vous représentez légalement d'autres personnes. Pour quel dossier l'application \
         <strong>{client}</strong> agit-elle ?</p>\
         <form method=\"post\" action=\"/auth/{realm}/record\"><fieldset><legend>Dossier</legend>{choices}</fieldset>\
         {fields}{c}<button type=\"submit\">Continuer</button></form>\
         <p class=\"aide\">Les accès faits pour une personne que vous représentez figurent dans sa trace d'accès, \
         à votre nom et en qualité de représentant légal.</p>",
        client = escape(&req.client_name),
        realm = req.realm.as_str(),
        fields = request_fields(req),
        c = hidden("csrf", csrf),
    )
}

/// Whose record an authorization is for.
#[derive(Clone, Copy)]
enum Record<'a> {
    /// Not chosen yet: asked when the account represents other persons.
    Ask,
    Own,
    /// The represented person's local `Patient` id.
    For(&'a str),
}

/// Issues the code and sends the browser back to the client (RFC 9207 `iss` included).
fn finish(
    p: &Provider,
    app: &App,
    req: &AuthorizeRequest,
    auth: &AuthResult,
    new_session: bool,
    record: Record,
) -> Response {
    if p.consent_needed(req, &auth.subject) {
        // The person decides first (MES-5): the consent page, in the session just opened.
        let csrf = socle_auth::random_token(18);
        let mut r = page(
            StatusCode::OK,
            req.realm,
            "Autoriser l'application",
            &consent_form(req, &csrf),
        );
        set_cookie(&mut r, app, req.realm, "socle_csrf", &csrf, 1800);
        if new_session {
            set_cookie(
                &mut r,
                app,
                req.realm,
                &session_cookie(req.realm),
                &auth.sid,
                p.config().session_ttl_s,
            );
        }
        return r;
    }
    let acting_for = match record {
        Record::Own => None,
        Record::For(patient) => Some(patient),
        Record::Ask => {
            let represented = match req.realm {
                Realm::Patient => match p.representations(&auth.subject) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "représentations illisibles");
                        return authorize_error(
                            p,
                            req.realm,
                            req.error("server_error", "erreur interne"),
                        );
                    }
                },
                Realm::Pro => Vec::new(),
            };
            if !represented.is_empty() {
                let csrf = socle_auth::random_token(18);
                let mut r = page(
                    StatusCode::OK,
                    req.realm,
                    "Choisir le dossier",
                    &record_form(req, &represented, &csrf),
                );
                set_cookie(&mut r, app, req.realm, "socle_csrf", &csrf, 1800);
                if new_session {
                    set_cookie(
                        &mut r,
                        app,
                        req.realm,
                        &session_cookie(req.realm),
                        &auth.sid,
                        p.config().session_ttl_s,
                    );
                }
                return r;
            }
            None
        }
    };
    let code = match p.issue_code(req, auth, acting_for) {
        Ok(c) => c,
        Err(socle_auth::AuthError::Invalid(m)) => {
            return page(
                StatusCode::BAD_REQUEST,
                req.realm,
                "Choix invalide",
                &format!(
                    "{}<p>Revenez à l'application et recommencez.</p>",
                    error_text(&m)
                ),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "émission d'un code impossible");
            return authorize_error(p, req.realm, req.error("server_error", "erreur interne"));
        }
    };
    let iss = p.issuer(req.realm);
    let mut params = vec![("code", code.as_str()), ("iss", iss.as_str())];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    let mut r = redirect(&with_params(&req.redirect_uri, &params));
    if new_session {
        set_cookie(
            &mut r,
            app,
            req.realm,
            &session_cookie(req.realm),
            &auth.sid,
            p.config().session_ttl_s,
        );
    }
    r
}

fn csrf_ok(headers: &HeaderMap, form: &[(String, String)]) -> bool {
    match (cookie(headers, "socle_csrf"), field(form, "csrf")) {
        (Some(c), Some(f)) => socle_auth::ct_eq(c.as_bytes(), f.as_bytes()),
        _ => false,
    }
}

/// Renders a page that carries a fresh CSRF token (cookie + hidden field).
fn page_with_csrf(
    app: &App,
    status: StatusCode,
    realm: Realm,
    title: &str,
    body: impl FnOnce(&str) -> String,
) -> Response {
    let csrf = socle_auth::random_token(18);
    let mut r = page(status, realm, title, &body(&csrf));
    set_cookie(&mut r, app, realm, "socle_csrf", &csrf, 1800);
    r
}

// ------------------------------------------------------------------ endpoints

async fn discovery(State(app): State<App>, Path(realm): Path<String>) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut r = json_response(StatusCode::OK, &p.discovery(realm));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn jwks(State(app): State<App>, Path(realm): Path<String>) -> Response {
    let p = match endpoint(&app, &realm) {
        Ok((p, _)) => p,
        Err(r) => return r,
    };
    match blocking(move || p.keys().jwks()).await {
        Ok(Ok(v)) => {
            let mut r = json_response(StatusCode::OK, &v);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "JWKS");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "server_error"}),
            )
        }
        Err(r) => r,
    }
}

async fn authorize_get(
    State(app): State<App>,
    Path(realm): Path<String>,
    req: Request,
) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let q = super::parse_query(req.uri().query());
    let sid = cookie(req.headers(), &session_cookie(realm));
    let app2 = app.clone();
    blocking(move || {
        let areq = match p.check_authorize(realm, &q) {
            Ok(r) => r,
            Err(e) => return authorize_error(&p, realm, e),
        };
        if let Some(sid) = sid
            && let Some(auth) = p.session(realm, &sid)
            && p.session_satisfies(&areq, &auth)
        {
            return finish(&p, &app2, &areq, &auth, false, Record::Ask);
        }
        page_with_csrf(&app2, StatusCode::OK, realm, "Connexion", |csrf| {
            login_form(realm, &areq, &q, csrf, None, "")
        })
    })
    .await
    .unwrap_or_else(|r| r)
}

async fn authorize_post(
    State(app): State<App>,
    Path(realm): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (headers, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let app2 = app.clone();
    blocking(move || {
        let (q, areq) = match posted_request(&p, realm, &form) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let login = field(&form, "login").unwrap_or("").trim().to_string();
        if !csrf_ok(&headers, &form) {
            return page_with_csrf(&app2, StatusCode::FORBIDDEN, realm, "Connexion", |csrf| {
                login_form(
                    realm,
                    &areq,
                    &q,
                    csrf,
                    Some("la page a expiré : saisissez à nouveau vos identifiants"),
                    &login,
                )
            });
        }
        let password = field(&form, "password").unwrap_or("");
        match p.login_password(&areq, &login, password, peer.ip()) {
            Ok(LoginStep::Done(auth)) => finish(&p, &app2, &areq, &auth, true, Record::Ask),
            Ok(LoginStep::NeedTotp { pending }) => {
                page_with_csrf(&app2, StatusCode::OK, realm, "Second facteur", |csrf| {
                    totp_form(realm, &pending, csrf, None)
                })
            }
            Err(e) => {
                let status = login_status(&e);
                let mut r = page_with_csrf(&app2, status, realm, "Connexion", |csrf| {
                    login_form(realm, &areq, &q, csrf, Some(&e.to_string()), &login)
                });
                retry_after(&mut r, &e);
                r
            }
        }
    })
    .await
    .unwrap_or_else(|r| r)
}

fn login_status(e: &LoginError) -> StatusCode {
    match e {
        LoginError::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
        LoginError::Refused(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    }
}

fn retry_after(r: &mut Response, e: &LoginError) {
    if let LoginError::Locked(s) = e
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

async fn totp_post(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (headers, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let app2 = app.clone();
    blocking(move || {
        let pending = field(&form, "pending").unwrap_or("").to_string();
        let Some(areq) = p.pending_request(realm, &pending) else {
            return page(
                StatusCode::BAD_REQUEST,
                realm,
                "Connexion expirée",
                &format!(
                    "{}<p>Revenez à l'application et recommencez.</p>",
                    error_text(&LoginError::Expired.to_string())
                ),
            );
        };
        if !csrf_ok(&headers, &form) {
            return page_with_csrf(
                &app2,
                StatusCode::FORBIDDEN,
                realm,
                "Second facteur",
                |csrf| {
                    totp_form(
                        realm,
                        &pending,
                        csrf,
                        Some("la page a expiré : saisissez à nouveau le code"),
                    )
                },
            );
        }
        match p.login_totp(realm, &pending, field(&form, "code").unwrap_or("")) {
            Ok(auth) => finish(&p, &app2, &areq, &auth, true, Record::Ask),
            Err(e) => {
                let status = login_status(&e);
                let still = p.pending_request(realm, &pending).is_some();
                let mut r = if still {
                    page_with_csrf(&app2, status, realm, "Second facteur", |csrf| {
                        totp_form(realm, &pending, csrf, Some(&e.to_string()))
                    })
                } else {
                    page(
                        status,
                        realm,
                        "Connexion interrompue",
                        &format!(
                            "{}<p>Revenez à l'application et recommencez.</p>",
                            error_text(&e.to_string())
                        ),
                    )
                };
                retry_after(&mut r, &e);
                r
            }
        }
    })
    .await
    .unwrap_or_else(|r| r)
}

async fn token(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    client_endpoint(app, realm, req, |p, realm, form, auth| {
        p.token(realm, form, auth)
    })
    .await
}

async fn userinfo(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let certificate = super::presented_certificate(req.extensions());
    let (headers, form) = if req.method() == axum::http::Method::POST {
        match form_of(req).await {
            Ok(f) => f,
            Err(r) => return r,
        }
    } else {
        (req.headers().clone(), Vec::new())
    };
    let Some(tok) = bearer(&headers, &form) else {
        return super::guard::bearer_error("jeton d'accès absent");
    };
    blocking(
        move || match p.userinfo(realm, &tok, certificate.as_deref()) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => super::guard::bearer_error(&e),
        },
    )
    .await
    .unwrap_or_else(|r| r)
}

async fn introspect(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    client_endpoint(app, realm, req, |p, realm, form, auth| {
        p.introspect(realm, form, auth)
    })
    .await
}

async fn revoke(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    client_endpoint(app, realm, req, |p, realm, form, auth| {
        p.revoke(realm, form, auth).map(|()| serde_json::json!({}))
    })
    .await
}

/// The endpoints a client calls with a form and its own authentication (token, introspection, revocation):
/// the answer is JSON, errors are OAuth errors.
async fn client_endpoint(
    app: App,
    realm: String,
    req: Request,
    f: impl FnOnce(&Provider, Realm, &[(String, String)], &ClientAuth) -> Result<Value, TokenError>
    + Send
    + 'static,
) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let certificate = req
        .extensions()
        .get::<Arc<crate::tls::PresentedCertificate>>()
        .cloned();
    let (headers, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    blocking(move || {
        let mut auth = ClientAuth::from_form(&form, basic_auth(&headers));
        // The chain is judged now, with the revocation lists in force (not when the connection opened).
        auth.certificate = certificate.map(|c| c.facts());
        match f(&p, realm, &form, &auth) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => token_error(&e),
        }
    })
    .await
    .unwrap_or_else(|r| r)
}

async fn logout(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (headers, form) = if req.method() == axum::http::Method::POST {
        match form_of(req).await {
            Ok(f) => f,
            Err(r) => return r,
        }
    } else {
        (req.headers().clone(), super::parse_query(req.uri().query()))
    };
    let app2 = app.clone();
    blocking(move || {
        let sid = cookie(&headers, &session_cookie(realm));
        let res = p.logout(
            realm,
            field(&form, "id_token_hint"),
            sid.as_deref(),
            field(&form, "post_logout_redirect_uri"),
        );
        let mut r = match res {
            Ok(Some(uri)) => {
                let params: Vec<(&str, &str)> = field(&form, "state")
                    .map(|s| vec![("state", s)])
                    .unwrap_or_default();
                redirect(&with_params(&uri, &params))
            }
            Ok(None) => page(
                StatusCode::OK,
                realm,
                "Vous êtes déconnecté",
                "<p>Votre session est terminée. Vous pouvez fermer cette page.</p>",
            ),
            Err(e) => page(
                StatusCode::BAD_REQUEST,
                realm,
                "Déconnexion impossible",
                &error_text(&e),
            ),
        };
        set_cookie(&mut r, &app2, realm, &session_cookie(realm), "", 0);
        r
    })
    .await
    .unwrap_or_else(|r| r)
}

fn activate_form(realm: Realm, csrf: &str, err: Option<&str>) -> String {
    format!(
        "<p>Activez votre compte avec le code reçu par courrier, puis choisissez votre mot de passe (12 caractères au moins).</p>{err}\
         <form method=\"post\" action=\"/auth/{realm}/activate\" novalidate>{c}\
         <label for=\"login\">Identifiant</label><input id=\"login\" name=\"login\" autocomplete=\"username\" required>\
         <label for=\"code\">Code d'activation</label><input id=\"code\" name=\"code\" autocomplete=\"off\" required>\
         <label for=\"password\">Nouveau mot de passe</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" minlength=\"12\" required>\
         <label for=\"password2\">Confirmez le mot de passe</label><input id=\"password2\" name=\"password2\" type=\"password\" autocomplete=\"new-password\" required>\
         <button type=\"submit\">Activer mon compte</button></form>",
        err = err.map(error_text).unwrap_or_default(),
        realm = realm.as_str(),
        c = hidden("csrf", csrf),
    )
}

async fn activate_get(State(app): State<App>, Path(realm): Path<String>) -> Response {
    let realm = match endpoint(&app, &realm) {
        Ok((_, r)) => r,
        Err(r) => return r,
    };
    page_with_csrf(&app, StatusCode::OK, realm, "Activer mon compte", |csrf| {
        activate_form(realm, csrf, None)
    })
}

async fn activate_post(
    State(app): State<App>,
    Path(realm): Path<String>,
    req: Request,
) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (headers, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let app2 = app.clone();
    blocking(move || {
        let again = |status: StatusCode, msg: &str| {
            page_with_csrf(&app2, status, realm, "Activer mon compte", |csrf| activate_form(realm, csrf, Some(msg)))
        };
        if !csrf_ok(&headers, &form) {
            return again(StatusCode::FORBIDDEN, "la page a expiré : recommencez");
        }
        let pw = field(&form, "password").unwrap_or("");
        if Some(pw) != field(&form, "password2") {
            return again(StatusCode::BAD_REQUEST, "les deux mots de passe diffèrent");
        }
        match p.activate(realm, field(&form, "login").unwrap_or("").trim(), field(&form, "code").unwrap_or(""), pw) {
            Ok((secret, uri)) => page(
                StatusCode::OK,
                realm,
                "Compte activé",
                &format!(
                    "<p>Ajoutez ce compte à votre application d'authentification (FreeOTP, Aegis, Google Authenticator…) \
                     avec la clé ci-dessous, puis connectez-vous depuis votre application de santé.</p>\
                     <p>Clé : <code>{}</code></p><p>Lien d'enrôlement : <code>{}</code></p>\
                     <p class=\"aide\">Cette clé ne sera plus affichée : conservez-la en lieu sûr.</p>",
                    escape(&secret),
                    escape(&uri)
                ),
            ),
            Err(e) => {
                let mut r = again(login_status(&e), &e.to_string());
                retry_after(&mut r, &e);
                r
            }
        }
    })
    .await
    .unwrap_or_else(|r| r)
}

/// The person's decision on the consent page.
async fn consent_post(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (headers, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let app2 = app.clone();
    blocking(move || {
        let (areq, auth) = match continued(&p, realm, &headers, &form) {
            Ok(x) => x,
            Err(r) => return r,
        };
        if field(&form, "decision") != Some("accept") {
            return authorize_error(
                &p,
                realm,
                areq.error("access_denied", "autorisation refusée par la personne"),
            );
        }
        if let Err(e) = p.grant_consent(&areq, &auth.subject) {
            tracing::error!(error = %e, "consentement non enregistré");
            return authorize_error(&p, realm, areq.error("server_error", "erreur interne"));
        }
        finish(&p, &app2, &areq, &auth, false, Record::Ask)
    })
    .await
    .unwrap_or_else(|r| r)
}

/// The authorization request a page's form carries back, in the browser's session, its CSRF token checked.
fn continued(
    p: &Provider,
    realm: Realm,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(AuthorizeRequest, AuthResult), Response> {
    let (_, areq) = posted_request(p, realm, form)?;
    let auth = cookie(headers, &session_cookie(realm)).and_then(|sid| p.session(realm, &sid));
    match (auth, csrf_ok(headers, form)) {
        (Some(auth), true) => Ok((areq, auth)),
        _ => Err(page(
            StatusCode::FORBIDDEN,
            realm,
            "Session expirée",
            &format!(
                "{}<p>Revenez à l'application et recommencez.</p>",
                error_text("la page a expiré")
            ),
        )),
    }
}

/// `POST /auth/{realm}/record`: the record chosen by an account that represents other persons.
async fn record_post(State(app): State<App>, Path(realm): Path<String>, req: Request) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (headers, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let app2 = app.clone();
    blocking(move || {
        let (areq, auth) = match continued(&p, realm, &headers, &form) {
            Ok(x) => x,
            Err(r) => return r,
        };
        // The consent, if still needed, comes first (a forged post cannot skip it).
        if p.consent_needed(&areq, &auth.subject) {
            return finish(&p, &app2, &areq, &auth, false, Record::Ask);
        }
        let record = match field(&form, "dossier") {
            Some("self") => Record::Own,
            Some(id) if !id.is_empty() => Record::For(id),
            _ => Record::Ask,
        };
        finish(&p, &app2, &areq, &auth, false, record)
    })
    .await
    .unwrap_or_else(|r| r)
}

/// `GET /auth/{realm}/consents` (bearer token of the person): the applications they authorised.
async fn consents_list(
    State(app): State<App>,
    Path(realm): Path<String>,
    req: Request,
) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(tok) = bearer(req.headers(), &[]) else {
        return super::guard::bearer_error("jeton d'accès absent");
    };
    let certificate = super::presented_certificate(req.extensions());
    blocking(move || {
        let who = match p.validate_presented(&tok, certificate.as_deref()) {
            Ok(w) if w.realm == Some(realm) => w,
            _ => return super::guard::bearer_error("jeton invalide pour ce domaine"),
        };
        // An application sees its own consent; the person's portal (scope `consents`) all of them.
        let all = who.scopes.has("consents");
        match p.consents(realm, &who.subject) {
            Ok(list) => json_response(
                StatusCode::OK,
                &serde_json::json!({"consents": list.iter().filter(|(id, ..)| all || *id == who.client_id).map(|(id, name, scope, at)| serde_json::json!({
                    "client_id": id, "client_name": name, "scope": scope,
                    "granted": socle_store::repo::iso_instant(*at)})).collect::<Vec<_>>()}),
            ),
            Err(e) => {
                tracing::error!(error = %e, "consentements");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": "server_error"}),
                )
            }
        }
    })
    .await
    .unwrap_or_else(|r| r)
}

/// `POST /auth/{realm}/consents/revoke` (bearer token of the person, form `client_id`): withdraws the consent;
/// the application's tokens for this person stop working at once.
async fn consents_revoke(
    State(app): State<App>,
    Path(realm): Path<String>,
    req: Request,
) -> Response {
    let (p, realm) = match endpoint(&app, &realm) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let tok = bearer(req.headers(), &[]);
    let certificate = super::presented_certificate(req.extensions());
    let (_, form) = match form_of(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(tok) = tok else {
        return super::guard::bearer_error("jeton d'accès absent");
    };
    blocking(move || {
        let who = match p.validate_presented(&tok, certificate.as_deref()) {
            Ok(w) if w.realm == Some(realm) => w,
            _ => return super::guard::bearer_error("jeton invalide pour ce domaine"),
        };
        let Some(client) = field(&form, "client_id") else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": "client_id absent"}),
            );
        };
        if client != who.client_id && !who.scopes.has("consents") {
            return json_response(
                StatusCode::FORBIDDEN,
                &serde_json::json!({"error": "insufficient_scope", "error_description":
                    "une application ne retire que sa propre autorisation ; les autres se gèrent depuis le portail de la personne (portée consents)"}),
            );
        }
        match p.revoke_consent(realm, &who.subject, client) {
            Ok(true) => json_response(StatusCode::OK, &serde_json::json!({"revoked": client})),
            Ok(false) => json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not_found", "error_description": "aucune autorisation active pour cette application"}),
            ),
            Err(e) => {
                tracing::error!(error = %e, "retrait de consentement");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": "server_error"}),
                )
            }
        }
    })
    .await
    .unwrap_or_else(|r| r)
}
