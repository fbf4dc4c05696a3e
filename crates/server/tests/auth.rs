//! Authentication against a running Socle with authentication enforced: the `openidconnect` crate as relying
//! party runs the code + PKCE flow (login page, TOTP, ID token verified with the published keys, userinfo), and
//! every attack the access-control issue lists is tried and must fail with the right error: forged, expired,
//! wrong-audience and wrong-issuer tokens, replayed codes, PKCE mismatch, scope escalation, refresh-token reuse,
//! brute force, wrong client secrets, client-assertion replay.

mod common;

use std::collections::HashMap;

use common::{
    AuthFixture, AuthFixture as Setup, Backend, PASSWORD, REDIRECT, after, backends, insi_date,
    local, now_step, patient_account, printed,
};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Value, json};

/// A browser: no automatic redirects, cookies kept per name.
struct Browser {
    agent: ureq::Agent,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
    retry_after: Option<String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new().redirects(0).build(),
            cookies: HashMap::new(),
        }
    }

    fn send(&mut self, req: ureq::Request, form: Option<&[(&str, &str)]>) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let req = if cookie.is_empty() {
            req
        } else {
            req.set("Cookie", &cookie.join("; "))
        };
        let res = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("requête : {e}"),
        };
        for c in resp.all("set-cookie") {
            if let Some((k, v)) = c.split(';').next().and_then(|kv| kv.split_once('=')) {
                if v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        let status = resp.status();
        let location = resp.header("location").map(str::to_string);
        let retry_after = resp.header("retry-after").map(str::to_string);
        let body = resp.into_string().unwrap_or_default();
        Page {
            status,
            location,
            body,
            retry_after,
        }
    }

    fn get(&mut self, url: &str) -> Page {
        let req = self.agent.get(url);
        self.send(req, None)
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let req = self.agent.post(url);
        self.send(req, Some(form))
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The hidden fields of the page's form.
fn hidden(body: &str) -> Vec<(String, String)> {
    body.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|part| {
            let (name, rest) = part.split_once("\" value=\"")?;
            let (value, _) = rest.split_once('"')?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

fn form_action(body: &str) -> String {
    body.split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string()
}

fn query_of(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|x| x.1).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Fills the login form (and the TOTP form when asked); returns the final page (the redirect to the client).
fn login(
    b: &mut Browser,
    root: &str,
    authorize_url: &str,
    login: &str,
    password: &str,
    totp: Option<(&[u8], u64)>,
) -> Page {
    let p = b.get(authorize_url);
    if p.status == 303 {
        return p;
    }
    assert_eq!(p.status, 200, "page de connexion : {}", p.body);
    assert!(
        p.body.contains("<html lang=\"fr\">") && p.body.contains("<label for=\"password\">"),
        "{}",
        p.body
    );
    let mut fields = hidden(&p.body);
    fields.push(("login".into(), login.into()));
    fields.push(("password".into(), password.into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let p = b.post(&format!("{root}{}", form_action(&p.body)), &f);
    if p.status != 200 || !p.body.contains("name=\"code\"") {
        return p;
    }
    let (secret, step) = totp.expect("un code TOTP est demandé");
    let code = socle_auth::totp::hotp(secret, step, 6);
    let mut fields = hidden(&p.body);
    fields.push(("code".into(), code));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let p = b.post(&format!("{root}{}", form_action(&p.body)), &f);
    consent(b, root, p, "accept")
}

/// Answers the consent page, if the provider shows one (patients authorise each application).
fn consent(b: &mut Browser, root: &str, p: Page, decision: &str) -> Page {
    if p.status != 200 || !p.body.contains("name=\"decision\"") {
        return p;
    }
    let mut fields = hidden(&p.body);
    fields.push(("decision".into(), decision.into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b.post(&format!("{root}{}", form_action(&p.body)), &f)
}

fn http() -> openidconnect::reqwest::blocking::Client {
    openidconnect::reqwest::blocking::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn token_post(
    root: &str,
    realm: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = ureq::post(&format!("{root}/auth/{realm}/token"));
    if let Some((id, secret)) = basic {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        req = req.set("Authorization", &format!("Basic {b}"));
    }
    match req.send_form(form) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

/// A patient application (public client) and the token of the patient `login` (TOTP `totp`) for it, with
/// `patient/*.cruds`, through the login and consent pages.
fn patient_token(st: &Setup, app: &str, login_name: &str, totp: &[u8]) -> String {
    let root = st.root.as_str();
    let pclient = after(
        &printed(&st.s.cli(&[
            "clients",
            "register",
            "--realm",
            "patient",
            "--name",
            app,
            "--redirect-uri",
            REDIRECT,
            "--auth-method",
            "none",
        ])),
        "client_id:",
    );
    let verifier = socle_auth::random_token(32);
    let purl = format!(
        "{root}/auth/patient/authorize?response_type=code&client_id={pclient}&redirect_uri={REDIRECT}&scope=openid%20patient/*.cruds&code_challenge={}&code_challenge_method=S256",
        socle_auth::pkce_challenge(&verifier)
    );
    let p = login(
        &mut Browser::new(),
        root,
        &purl,
        login_name,
        PASSWORD,
        Some((totp, now_step())),
    );
    let code = query_of(p.location.as_deref().unwrap())["code"].clone();
    let (_, t) = token_post(
        root,
        "patient",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &pclient),
            ("code_verifier", &verifier),
        ],
        None,
    );
    t["access_token"].as_str().unwrap().to_string()
}

/// The fixture's professional logged in with the second factor (code + PKCE), with `scope`: the access token,
/// the userinfo answer, and the browser (its session gets further codes without a second login).
fn pro_token(st: &Setup, scope: &str) -> (String, Value, Browser) {
    let mut browser = Browser::new();
    let (code, verifier) = code_for(&mut browser, st, scope, now_step());
    let (_, t) = token_post(
        &st.root,
        "pro",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &st.app),
            ("code_verifier", &verifier),
        ],
        None,
    );
    let pro = t["access_token"].as_str().unwrap().to_string();
    let info: Value = ureq::get(&format!("{}/auth/pro/userinfo", st.root))
        .set("Authorization", &format!("Bearer {pro}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    (pro, info, browser)
}

/// A confidential client of the pro realm with `scope`, and its client-credentials access token.
fn system_token(st: &Setup, name: &str, scope: &str) -> String {
    let out = printed(&st.s.cli(&[
        "clients", "register", "--realm", "pro", "--name", name, "--scope", scope,
    ]));
    let (id, secret) = (after(&out, "client_id:"), after(&out, "client_secret:"));
    let (_, t) = token_post(
        &st.root,
        "pro",
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    );
    t["access_token"].as_str().unwrap().to_string()
}

fn fhir(
    root: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let mut req = ureq::request(method, &format!("{root}/fhir/{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req
            .set("Content-Type", "application/fhir+json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = r.status();
    let www = r.header("www-authenticate").map(str::to_string);
    (status, r.into_json().unwrap_or(Value::Null), www)
}

/// Runs the code + PKCE flow by hand (for the attack tests): returns (code, verifier).
fn code_for(b: &mut Browser, st: &Setup, scope: &str, step: u64) -> (String, String) {
    let verifier = socle_auth::random_token(32);
    let challenge = socle_auth::pkce_challenge(&verifier);
    let url = format!(
        "{}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri={}&scope={}&state=s1&code_challenge={challenge}&code_challenge_method=S256",
        st.root,
        st.app,
        form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>(),
    );
    let p = login(
        b,
        &st.root,
        &url,
        &st.rpps,
        PASSWORD,
        Some((&st.totp, step)),
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let q = query_of(p.location.as_deref().unwrap());
    (
        q.get("code")
            .cloned()
            .unwrap_or_else(|| panic!("pas de code : {q:?}")),
        verifier,
    )
}

#[test]
fn code_flow_with_the_openidconnect_crate() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let http = http();
        let issuer = format!("{}/auth/pro", st.root);
        let meta = CoreProviderMetadata::discover(&IssuerUrl::new(issuer.clone()).unwrap(), &http)
            .expect("découverte");
        let client = CoreClient::from_provider_metadata(meta, ClientId::new(st.app.clone()), None)
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("fhirUser".into()))
            .add_scope(Scope::new("offline_access".into()))
            .add_scope(Scope::new("user/*.cruds".into()))
            .set_pkce_challenge(challenge)
            .url();
        let mut b = Browser::new();
        // A wrong TOTP code first: refused, the form comes back.
        let p = b.get(url.as_str());
        let mut fields = hidden(&p.body);
        fields.push(("login".into(), st.rpps.clone()));
        fields.push(("password".into(), PASSWORD.into()));
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let p = b.post(&format!("{}{}", st.root, form_action(&p.body)), &f);
        assert!(
            p.body.contains("autocomplete=\"one-time-code\""),
            "{}",
            p.body
        );
        let good = socle_auth::totp::hotp(&st.totp, now_step(), 6);
        let bad = if good == "000000" { "111111" } else { "000000" };
        let mut fields = hidden(&p.body);
        fields.push(("code".into(), bad.into()));
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let p = b.post(&format!("{}{}", st.root, form_action(&p.body)), &f);
        assert_eq!(p.status, 401, "{}", p.body);
        assert!(p.body.contains("role=\"alert\""), "{}", p.body);
        let mut fields = hidden(&p.body);
        fields.push(("code".into(), good));
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let p = b.post(&format!("{}{}", st.root, form_action(&p.body)), &f);
        assert_eq!(p.status, 303, "{}", p.body);
        let back = query_of(p.location.as_deref().unwrap());
        assert_eq!(
            back.get("state").map(String::as_str),
            Some(csrf.secret().as_str())
        );
        assert_eq!(back.get("iss"), Some(&issuer));
        let tok = client
            .exchange_code(AuthorizationCode::new(back["code"].clone()))
            .unwrap()
            .set_pkce_verifier(verifier)
            .request(&http)
            .expect("échange du code");
        let id = tok.id_token().expect("id_token");
        let claims = id
            .claims(&client.id_token_verifier(), &nonce)
            .expect("id_token vérifié");
        assert_eq!(claims.subject().as_str(), format!("8{}", st.rpps));
        assert_eq!(
            claims.auth_context_ref().map(|a| a.as_str()),
            Some("eidas2")
        );
        let info: CoreUserInfoClaims = client
            .user_info(tok.access_token().clone(), None)
            .unwrap()
            .request(&http)
            .expect("userinfo");
        assert_eq!(info.subject().as_str(), format!("8{}", st.rpps));
        // The professional's claims from the Annuaire.
        let raw: Value = ureq::get(&format!("{issuer}/userinfo"))
            .set(
                "Authorization",
                &format!("Bearer {}", tok.access_token().secret()),
            )
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(raw["rpps"], st.rpps.as_str());
        assert!(!raw["profession"].as_array().unwrap().is_empty(), "{raw}");
        assert!(
            raw["structures"][0]["organization"]
                .as_str()
                .unwrap()
                .starts_with("Organization/"),
            "{raw}"
        );
        // The access token opens the FHIR API, and the audit trail names the professional.
        let at = tok.access_token().secret().clone();
        let obs =
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "poids"}});
        let (c, _, _) = fhir(&st.root, "POST", "Observation", Some(&at), Some(&obs));
        assert_eq!(c, 201);
        // The global trail is for software acting on its own behalf (a user would see every patient's accesses).
        assert_eq!(
            fhir(&st.root, "GET", "$audit-trail?_count=5", Some(&at), None).0,
            403
        );
        let (_, sys) = token_post(
            &st.root,
            "pro",
            &[("grant_type", "client_credentials")],
            Some((&st.sys.0, &st.sys.1)),
        );
        let sys = sys["access_token"].as_str().unwrap().to_string();
        let (c, trail, _) = fhir(&st.root, "GET", "$audit-trail?_count=5", Some(&sys), None);
        assert_eq!(c, 200, "{trail}");
        let who: Vec<&str> = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["agent"][0]["who"]["identifier"]["value"].as_str())
            .collect();
        assert!(
            who.contains(&format!("pro:8{}", st.rpps).as_str()),
            "{who:?}"
        );
        // Refresh (rotation): a new refresh token, the old one is spent.
        let rt = tok.refresh_token().expect("refresh_token").secret().clone();
        let (c, r1) = token_post(
            &st.root,
            "pro",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", &st.app),
            ],
            None,
        );
        assert_eq!(c, 200, "{r1}");
        assert_ne!(r1["refresh_token"].as_str().unwrap(), rt);
        // SSO: a second authorization in the same browser needs no login.
        let (challenge, _) = PkceCodeChallenge::new_random_sha256();
        let (url2, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .url();
        let p = b.get(url2.as_str());
        assert_eq!(p.status, 303, "session réutilisée : {}", p.body);
        // RP-initiated logout ends the session and revokes the refresh tokens it produced.
        let logout = format!(
            "{issuer}/logout?id_token_hint={}&post_logout_redirect_uri={}&state=fin",
            id,
            form_urlencoded::byte_serialize(b"http://127.0.0.1:9/bye").collect::<String>()
        );
        let p = b.get(&logout);
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(
            p.location.as_deref(),
            Some("http://127.0.0.1:9/bye?state=fin")
        );
        let new_rt = r1["refresh_token"].as_str().unwrap();
        let (c, e) = token_post(
            &st.root,
            "pro",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", new_rt),
                ("client_id", &st.app),
            ],
            None,
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        let p = b.get(url2.as_str());
        assert_eq!(
            p.status, 200,
            "après déconnexion, la page de connexion revient"
        );
    }
}

#[test]
fn attacks_are_rejected() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let step = now_step();
        let mut b = Browser::new();

        // No token: 401 with a challenge; the public Annuaire stays readable, not what hangs off it.
        let (c, oo, www) = fhir(root, "GET", "Observation", None, None);
        assert_eq!(c, 401, "{oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert!(www.unwrap().starts_with("Bearer"));
        assert_eq!(
            fhir(root, "GET", "Practitioner?_count=2", None, None).0,
            200
        );
        let (c, cs, _) = fhir(root, "GET", "metadata", None, None);
        assert_eq!(c, 200);
        assert_eq!(
            cs["rest"][0]["security"]["service"][0]["coding"][0]["code"],
            "SMART-on-FHIR"
        );
        assert_eq!(
            cs["rest"][0]["security"]["extension"][0]["extension"][1]["valueUri"],
            format!("{root}/auth/pro/token")
        );
        assert_eq!(
            fhir(
                root,
                "GET",
                "Practitioner?_revinclude=Observation:performer",
                None,
                None
            )
            .0,
            401
        );
        assert_eq!(
            fhir(
                root,
                "GET",
                "Practitioner?_has:Observation:performer:status=final",
                None,
                None
            )
            .0,
            401
        );
        assert_eq!(fhir(root, "GET", "Patient?_count=1", None, None).0, 401);

        // A code, exchanged once; a replay fails and revokes what the first exchange gave.
        let (code, verifier) = code_for(&mut b, &st, "openid offline_access user/*.rs", step);
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", st.app.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let (c, tok) = token_post(root, "pro", &form, None);
        assert_eq!(c, 200, "{tok}");
        let at = tok["access_token"].as_str().unwrap().to_string();
        assert_eq!(
            fhir(root, "GET", "Practitioner?_count=1", Some(&at), None).0,
            200
        );
        let (c, e) = token_post(root, "pro", &form, None);
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "code rejoué : {e}"
        );
        let (c, oo, _) = fhir(root, "GET", "Practitioner?_count=1", Some(&at), None);
        assert_eq!(c, 401, "jeton d'un code rejoué encore valide : {oo}");

        // PKCE mismatch.
        let (code, _) = code_for(&mut b, &st, "openid user/*.rs", step);
        let wrong = socle_auth::random_token(32);
        let (c, e) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &wrong),
            ],
            None,
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        assert!(
            e["error_description"].as_str().unwrap().contains("PKCE"),
            "{e}"
        );

        // Without PKCE, or asking for more than the application may: back to the client with the error.
        let p = b.get(&format!("{root}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid&state=x", st.app));
        assert_eq!(p.status, 303);
        assert_eq!(
            query_of(p.location.as_deref().unwrap())
                .get("error")
                .map(String::as_str),
            Some("invalid_request")
        );
        let p = b.get(&format!("{root}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid%20system/*.cruds&code_challenge={}&code_challenge_method=S256", st.app, socle_auth::pkce_challenge("v")));
        assert_eq!(
            query_of(p.location.as_deref().unwrap())
                .get("error")
                .map(String::as_str),
            Some("invalid_scope")
        );
        // An unregistered redirect URI is never redirected to.
        let p = b.get(&format!("{root}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri=https://evil.example/cb&scope=openid", st.app));
        assert_eq!((p.status, p.location.is_none()), (400, true));

        // Refresh-token reuse revokes the grant.
        let (code, verifier) = code_for(&mut b, &st, "openid offline_access user/*.rs", step);
        let (_, tok) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        let rt0 = tok["refresh_token"].as_str().unwrap().to_string();
        let (c, wider) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt0),
                ("client_id", &st.app),
                ("scope", "openid user/*.cruds"),
            ],
            None,
        );
        assert_eq!(
            (c, wider["error"].as_str()),
            (400, Some("invalid_scope")),
            "{wider}"
        );
        let (_, t1) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt0),
                ("client_id", &st.app),
            ],
            None,
        );
        let rt1 = t1["refresh_token"].as_str().unwrap().to_string();
        let (c, e) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt0),
                ("client_id", &st.app),
            ],
            None,
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        let (c, e) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt1),
                ("client_id", &st.app),
            ],
            None,
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "le successeur doit être révoqué : {e}"
        );
        assert_eq!(
            fhir(
                root,
                "GET",
                "Observation",
                Some(t1["access_token"].as_str().unwrap()),
                None
            )
            .0,
            401
        );
        // A reuse detected while the legitimate rotation was still writing its successor: the revocation marks
        // the rows it finds (here the rotated token), the successor is written after it — and refused on use,
        // even once the access tokens' revocation marker has lapsed (simulated: the rows only).
        let (code, verifier) = code_for(&mut b, &st, "openid offline_access user/*.rs", step);
        let refresh = |rt: &str| {
            token_post(
                root,
                "pro",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                    ("client_id", &st.app),
                ],
                None,
            )
        };
        let (_, tok) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        let ra = tok["refresh_token"].as_str().unwrap().to_string();
        let (c, tb) = refresh(&ra);
        assert_eq!(c, 200, "{tb}");
        let rb = tb["refresh_token"].as_str().unwrap().to_string();
        let store = socle_store::open(st.s.database.as_deref(), st.s.data.path()).unwrap();
        store
            .write(&mut |c| {
                c.execute(
                    "UPDATE auth_refresh SET state = 'revoked' WHERE token_hash = ?",
                    &[socle_auth::token_hash(&ra).into()],
                )?;
                Ok(())
            })
            .unwrap();
        let (c, e) = refresh(&rb);
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );

        // Client credentials: wrong secret, scope escalation, then a token limited to its scopes.
        let (id, secret) = (&st.sys.0, &st.sys.1);
        let (c, e) = token_post(
            root,
            "pro",
            &[("grant_type", "client_credentials")],
            Some((id, "mauvais")),
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (401, Some("invalid_client")),
            "{e}"
        );
        let (c, e) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.cruds"),
            ],
            Some((id, secret)),
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_scope")),
            "{e}"
        );
        let (c, e) = token_post(
            root,
            "patient",
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        );
        assert_eq!(
            (c, e["error"].as_str()),
            (401, Some("invalid_client")),
            "client d'un autre domaine : {e}"
        );
        let (c, sys) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs system/Observation.c"),
            ],
            Some((id, secret)),
        );
        assert_eq!(c, 200, "{sys}");
        let sat = sys["access_token"].as_str().unwrap().to_string();
        assert!(sys.get("refresh_token").is_none() && sys.get("id_token").is_none());
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
        assert_eq!(
            fhir(root, "POST", "Observation", Some(&sat), Some(&obs)).0,
            201
        );
        let (c, oo, www) = fhir(
            root,
            "POST",
            "Condition",
            Some(&sat),
            Some(&json!({"resourceType": "Condition", "subject": {"reference": "Patient/x"}})),
        );
        assert_eq!(c, 403, "{oo}");
        assert!(www.unwrap().contains("insufficient_scope"));
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]});
        assert_eq!(
            fhir(root, "POST", "", Some(&sat), Some(&tx)).0,
            403,
            "entrée de transaction hors portée"
        );

        // Introspection (RFC 7662) and revocation (RFC 7009).
        let intro = |token: &str| -> Value {
            let r = ureq::post(&format!("{root}/auth/pro/introspect"))
                .set(
                    "Authorization",
                    &format!("Basic {}", {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
                    }),
                )
                .send_form(&[("token", token)])
                .unwrap();
            r.into_json().unwrap()
        };
        let i = intro(&sat);
        assert_eq!(i["active"], true, "{i}");
        assert_eq!(i["client_id"], id.as_str());
        assert_eq!(intro("n'importe quoi")["active"], false);
        // A professional's tokens, issued to the application, introspected by another client: the access token
        // without the person's civil identity; the refresh token not at all.
        let (code, verifier) = code_for(&mut b, &st, "openid offline_access user/*.rs", step);
        let (_, user) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        let i = intro(user["access_token"].as_str().unwrap());
        assert_eq!(i["active"], true, "{i}");
        assert!(
            i.get("profession").is_some() && i.get("sub").is_some(),
            "{i}"
        );
        for k in ["family_name", "given_name", "name"] {
            assert!(i.get(k).is_none(), "{k} : {i}");
        }
        assert_eq!(
            intro(user["refresh_token"].as_str().unwrap())["active"],
            false
        );
        let r = ureq::post(&format!("{root}/auth/pro/revoke"))
            .set(
                "Authorization",
                &format!("Basic {}", {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
                }),
            )
            .send_form(&[("token", &sat)])
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(intro(&sat)["active"], false);
        assert_eq!(fhir(root, "GET", "Observation", Some(&sat), None).0, 401);

        // Forged tokens: signed by Socle's own key but with a wrong audience, a wrong issuer, expired; altered;
        // unsigned; signed by another key.
        let store = match &backend {
            Backend::Sqlite => socle_store::open(None, st.s.data.path()).unwrap(),
            Backend::Postgres(_) => {
                socle_store::open(st.s.database.as_deref(), st.s.data.path()).unwrap()
            }
        };
        // The private keys are sealed in the database: without the secrets key beside the data, a copy of the
        // database signs nothing.
        let no_key = socle_auth::keys::KeyRing::open(store.clone());
        assert!(
            no_key
                .as_ref()
                .is_err_and(|e| e.to_string().contains("--secrets-key")),
            "{:?}",
            no_key.err()
        );
        let mut rows = Vec::new();
        store
            .read(&mut |c| {
                rows = c.query(
                    "SELECT private_der FROM auth_keys UNION ALL SELECT totp_secret FROM auth_accounts \
                     WHERE totp_secret IS NOT NULL",
                    &[],
                )?;
                Ok(())
            })
            .unwrap();
        assert!(rows.len() >= 3, "{rows:?}");
        for r in &rows {
            let v = r.first().and_then(|v| v.as_str()).unwrap();
            assert!(
                v.starts_with(socle_auth::seal::SEALED),
                "secret en clair : {v}"
            );
        }
        let secrets = std::sync::Arc::new(
            socle_auth::seal::Sealer::load_or_create(&st.s.data.path().join("secrets.key"))
                .unwrap(),
        );
        let keys = socle_auth::keys::KeyRing::open_sealed(store, Some(secrets)).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let base = json!({"iss": format!("{root}/auth/pro"), "sub": "x", "aud": format!("{root}/fhir"), "client_id": id,
            "scope": "system/*.cruds", "iat": now, "exp": now + 300, "jti": "forge", "socle_client": true});
        let sign = |patch: Value| {
            let mut c = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            keys.sign(socle_auth::jose::Alg::Es256, &c).unwrap()
        };
        let good = sign(json!({}));
        assert_eq!(
            fhir(root, "GET", "Observation", Some(&good), None).0,
            200,
            "le témoin signé par la vraie clé doit passer"
        );
        for (what, t) in [
            (
                "audience",
                sign(json!({"aud": "https://autre.example/fhir"})),
            ),
            (
                "émetteur",
                sign(json!({"iss": "https://faux.example/auth/pro"})),
            ),
            ("expiré", sign(json!({"exp": now - 10}))),
        ] {
            let (c, oo, www) = fhir(root, "GET", "Observation", Some(&t), None);
            assert_eq!(c, 401, "{what} : {oo}");
            assert!(www.unwrap().contains("invalid_token"), "{what}");
        }
        let parts: Vec<&str> = good.split('.').collect();
        let payload = socle_auth::jose::b64(json!({"iss": format!("{root}/auth/pro"), "sub": "x", "aud": format!("{root}/fhir"), "scope": "system/*.cruds", "exp": now + 300, "jti": "y", "socle_client": true}).to_string().as_bytes());
        let altered = format!("{}.{payload}.{}", parts[0], parts[2]);
        let unsigned = format!("{}.{payload}.", socle_auth::jose::b64(br#"{"alg":"none"}"#));
        let other_store = socle_store::open(None, &tempfile::tempdir().unwrap().keep()).unwrap();
        let other = socle_auth::keys::KeyRing::open(other_store)
            .unwrap()
            .sign(socle_auth::jose::Alg::Es256, &base)
            .unwrap();
        for (what, t) in [
            ("altéré", altered),
            ("non signé", unsigned),
            ("autre clé", other),
            ("charabia", "abc".into()),
        ] {
            assert_eq!(
                fhir(root, "GET", "Observation", Some(&t), None).0,
                401,
                "{what}"
            );
        }

        // Brute force: after 5 wrong passwords the account is locked, even for the right one.
        let url = format!(
            "{root}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid&code_challenge={}&code_challenge_method=S256",
            st.app,
            socle_auth::pkce_challenge("v")
        );
        let mut bf = Browser::new();
        for i in 0..5 {
            let p = login(
                &mut bf,
                root,
                &url,
                &st.rpps,
                &format!("faux-{i}-mot-de-passe"),
                None,
            );
            assert_eq!(p.status, 401, "essai {i}");
        }
        let p = login(
            &mut bf,
            root,
            &url,
            &st.rpps,
            PASSWORD,
            Some((&st.totp, step + 1)),
        );
        assert_eq!(p.status, 429, "{}", p.body);
        assert!(p.retry_after.is_some());
        assert!(p.body.contains("verrouillé"));
        printed(
            &st.s
                .cli(&["accounts", "unlock", "--realm", "pro", "--login", &st.rpps]),
        );
        // The same 5 wrong passwords sent at once: each is counted (the count is incremented where it is
        // stored, not from what each attempt read before).
        std::thread::scope(|scope| {
            for i in 0..5 {
                let (url, rpps) = (&url, &st.rpps);
                scope.spawn(move || {
                    let mut b = Browser::new();
                    let p = login(&mut b, root, url, rpps, &format!("parallèle-{i}"), None);
                    assert_eq!(p.status, 401, "essai parallèle {i}");
                });
            }
        });
        let p = login(
            &mut Browser::new(),
            root,
            &url,
            &st.rpps,
            PASSWORD,
            Some((&st.totp, step + 2)),
        );
        assert_eq!(p.status, 429, "{}", p.body);
        printed(
            &st.s
                .cli(&["accounts", "unlock", "--realm", "pro", "--login", &st.rpps]),
        );

        // Patients: TOTP is mandatory, and a patient token reaches only the patient's own record.
        let pclient = printed(&st.s.cli(&[
            "clients",
            "register",
            "--realm",
            "patient",
            "--name",
            "Appli patient",
            "--redirect-uri",
            REDIRECT,
            "--auth-method",
            "none",
        ]));
        let pid = after(&pclient, "client_id:");
        let verifier = socle_auth::random_token(32);
        let purl = format!(
            "{root}/auth/patient/authorize?response_type=code&client_id={pid}&redirect_uri={REDIRECT}&scope=openid%20patient/*.rs&code_challenge={}&code_challenge_method=S256",
            socle_auth::pkce_challenge(&verifier)
        );
        let p = login(
            &mut Browser::new(),
            root,
            &purl,
            &st.ins,
            PASSWORD,
            Some((&st.patient_totp, step)),
        );
        assert_eq!(p.status, 303, "{}", p.body);
        let code = query_of(p.location.as_deref().unwrap())["code"].clone();
        let (c, ptok) = token_post(
            root,
            "patient",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &pid),
                ("code_verifier", &verifier),
            ],
            None,
        );
        assert_eq!(c, 200, "{ptok}");
        let pat = ptok["access_token"].as_str().unwrap();
        assert_eq!(fhir(root, "GET", "Observation", Some(pat), None).0, 403);
        // A pro-realm token is not a patient token and vice versa: the patient's token at the pro userinfo.
        let r = ureq::get(&format!("{root}/auth/pro/userinfo"))
            .set("Authorization", &format!("Bearer {pat}"))
            .call();
        assert!(matches!(r, Err(ureq::Error::Status(401, _))));

        // private_key_jwt: an assertion signed with the client's key is accepted once, not twice.
        let client_keys = socle_auth::keys::KeyRing::open(
            socle_store::open(None, &tempfile::tempdir().unwrap().keep()).unwrap(),
        )
        .unwrap();
        let jwks = client_keys.jwks().unwrap();
        let ec_only = json!({"keys": jwks["keys"].as_array().unwrap().iter().filter(|k| k["kty"] == "EC").cloned().collect::<Vec<_>>()});
        let jwks_file = st.s.data.path().join("client-jwks.json");
        std::fs::write(&jwks_file, ec_only.to_string()).unwrap();
        let out = printed(&st.s.cli(&[
            "clients",
            "register",
            "--realm",
            "pro",
            "--name",
            "Logiciel à clé",
            "--auth-method",
            "private_key_jwt",
            "--jwks",
            jwks_file.to_str().unwrap(),
        ]));
        let kid = after(&out, "client_id:");
        let assertion = client_keys
            .sign(socle_auth::jose::Alg::Es256, &json!({"iss": kid, "sub": kid, "aud": format!("{root}/auth/pro/token"), "exp": now + 120, "jti": "unique-1"}))
            .unwrap();
        let form = [
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ];
        let (c, t) = token_post(root, "pro", &form, None);
        assert_eq!(c, 200, "{t}");
        let (c, e) = token_post(root, "pro", &form, None);
        assert_eq!(
            (c, e["error"].as_str()),
            (401, Some("invalid_client")),
            "assertion rejouée : {e}"
        );
    }
}

#[test]
fn insecure_local_only_on_loopback() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socle"))
        .args([
            "serve",
            "--insecure-local",
            "--listen",
            "0.0.0.0:0",
            "--data",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bouclage"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The public Annuaire is readable without a token, except entries labelled restricted (`meta.security` R, the
/// "liste rouge"): not readable, not found, not included, and no `_revinclude`/`_has` towards other data, even in
/// a POST `_search` body.
#[test]
fn restricted_annuaire_entries_need_a_token() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let admin = system_token(&st, "Gestion de l'Annuaire", "system/*.cruds");
        let put = |path: &str, resource: &Value| {
            let (c, oo, _) = fhir(root, "PUT", path, Some(&admin), Some(resource));
            assert!(c == 201 || c == 200, "{path} : {oo}");
        };
        // The resource types of a searchset's entries.
        let types = |b: &Value| -> Vec<String> {
            b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["resource"]["resourceType"].as_str().map(str::to_string))
                .collect()
        };
        let rpps = socle_directory::Rpps::from_body(1_234_567_890);
        let pr = json!({"resourceType": "Practitioner", "id": "liste-rouge",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
            "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": rpps.as_str()}],
            "name": [{"family": "DISCRET", "given": ["Jeanne"]}]});
        put("Practitioner/liste-rouge", &pr);
        let role = json!({"resourceType": "PractitionerRole", "id": "role-discret",
            "practitioner": {"reference": "Practitioner/liste-rouge"}});
        put("PractitionerRole/role-discret", &role);

        let (c, _, www) = fhir(root, "GET", "Practitioner/liste-rouge", None, None);
        assert_eq!(c, 401);
        assert!(www.is_some());
        assert_eq!(
            fhir(root, "GET", "Practitioner/liste-rouge/_history", None, None).0,
            401
        );
        let (c, b, _) = fhir(
            root,
            "GET",
            &format!(
                "Practitioner?identifier=https://rpps.esante.gouv.fr|{}",
                rpps.as_str()
            ),
            None,
            None,
        );
        assert_eq!(c, 200);
        assert!(
            b["entry"].as_array().is_none_or(|e| e.is_empty()),
            "trouvé sans jeton : {b}"
        );
        let (c, b, _) = fhir(
            root,
            "GET",
            "PractitionerRole?_id=role-discret&_include=PractitionerRole:practitioner",
            None,
            None,
        );
        assert_eq!(c, 200);
        assert_eq!(types(&b), ["PractitionerRole"], "inclus sans jeton : {b}");
        // An Annuaire entry that references patient data (a reference's type is not checked against its
        // parameter's targets): never included for anonymous callers, by name or by wildcard.
        put(
            "Patient/hors-annuaire",
            &json!({"resourceType": "Patient", "id": "hors-annuaire"}),
        );
        let odd = json!({"resourceType": "PractitionerRole", "id": "role-bizarre",
            "organization": {"reference": "Patient/hors-annuaire"}});
        put("PractitionerRole/role-bizarre", &odd);
        for q in [
            "PractitionerRole?_id=role-bizarre&_include=PractitionerRole:organization",
            "PractitionerRole?_id=role-bizarre&_include=PractitionerRole:*",
            "PractitionerRole?_id=role-bizarre&_include=*",
        ] {
            let (c, b, _) = fhir(root, "GET", q, None, None);
            assert_eq!(c, 200, "{q} : {b}");
            assert_eq!(
                types(&b),
                ["PractitionerRole"],
                "{q} : inclus sans jeton : {b}"
            );
        }
        // A chain does not look through to a restricted entry: what a role's practitioner is called, or their
        // RPPS number, is not told by which roles a chained search finds.
        let chained = [
            "PractitionerRole?practitioner.family=DISCRET".to_string(),
            format!(
                "PractitionerRole?practitioner.identifier=https://rpps.esante.gouv.fr|{}",
                rpps.as_str()
            ),
            "PractitionerRole?practitioner:Practitioner.name=Jeanne".to_string(),
        ];
        for q in &chained {
            let (c, b, _) = fhir(root, "GET", q, None, None);
            assert_eq!(c, 200, "{q} : {b}");
            assert!(
                b["entry"].as_array().is_none_or(|e| e.is_empty()),
                "{q} : trouvé sans jeton : {b}"
            );
            let (c, b, _) = fhir(root, "GET", q, Some(&admin), None);
            assert_eq!(c, 200, "{q} : {b}");
            assert_eq!(
                b["entry"][0]["resource"]["id"], "role-discret",
                "{q} avec un jeton : {b}"
            );
        }
        let r = ureq::post(&format!("{root}/fhir/Practitioner/_search"))
            .send_form(&[("_revinclude", "Observation:performer")]);
        assert!(
            matches!(r, Err(ureq::Error::Status(401, _))),
            "POST _search vers des données non publiques"
        );
        // With a token, the entry is there.
        assert_eq!(
            fhir(root, "GET", "Practitioner/liste-rouge", Some(&admin), None).0,
            200
        );
        let (_, b, _) = fhir(
            root,
            "GET",
            "PractitionerRole?_id=role-discret&_include=PractitionerRole:practitioner",
            Some(&admin),
            None,
        );
        assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    }
}

/// The policy engine on reads by id: no care relationship → refused; a care relationship → allowed, documents
/// through the matrix; a patient's block wins; break-glass (second factor, stated reason) opens an emergency
/// access with its own audit record and a notification to the patient; every decision is in the trail.
#[test]
fn policy_decides_on_reads() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let sys = system_token(&st, "Logiciel d'établissement", "system/*.cruds");
        let put = |path: &str, body: Value| {
            let (c, oo, _) = fhir(root, "PUT", path, Some(&sys), Some(&body));
            assert!(c == 200 || c == 201, "{path} : {oo}");
        };
        // An Observation of `patient`, stored by the software under `id`.
        let put_obs = |id: &str, text: &str, patient: &str, extra: Value| {
            let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
                "code": {"text": text}, "subject": {"reference": format!("Patient/{patient}")}});
            if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
                o.extend(extra.clone());
            }
            put(&format!("Observation/{id}"), o);
        };
        put(
            "Patient/pat-1",
            json!({"resourceType": "Patient", "id": "pat-1", "name": [{"family": "MARTIN"}]}),
        );
        put_obs("obs-1", "glycémie", "pat-1", json!({}));
        put(
            "DocumentReference/doc-1",
            json!({"resourceType": "DocumentReference", "id": "doc-1", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "34874-8"}]},
            "subject": {"reference": "Patient/pat-1"}, "content": [{"attachment": {"contentType": "application/pdf"}}]}),
        );

        // The professional, logged in with the second factor (eidas2).
        let (pro, info, mut browser) = pro_token(&st, "openid user/*.rs");
        let professions: Vec<String> = info["profession"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();

        let read = |path: &str, bg: Option<&str>| -> (u16, Value) {
            let mut req = ureq::get(&format!("{root}/fhir/{path}"))
                .set("Authorization", &format!("Bearer {pro}"));
            if let Some(r) = bg {
                req = req.set(
                    "X-Socle-Break-Glass",
                    &form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>(),
                );
            }
            match req.call() {
                Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
                Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or(Value::Null)),
                Err(e) => panic!("{e}"),
            }
        };
        let refused = |(c, oo): (u16, Value), code: &str| {
            assert_eq!(c, 403, "{oo}");
            assert!(
                oo["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .contains(code),
                "{code} : {oo}"
            );
        };
        refused(read("Observation/obs-1", None), "no-care-relationship");
        // Versions and histories of one resource are decided like reads.
        refused(
            read("Observation/obs-1/_history/1", None),
            "no-care-relationship",
        );
        refused(
            read("Observation/obs-1/_history", None),
            "no-care-relationship",
        );
        // Not patient data: no relationship needed.
        let (c, _) = read(
            &format!(
                "Practitioner/{}",
                info["fhirUser"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("Practitioner/")
            ),
            None,
        );
        assert_eq!(c, 200);

        let add = |args: &[&str]| -> String {
            let mut a = vec!["policy", "add-rule", "--patient", "pat-1"];
            a.extend_from_slice(args);
            after(&printed(&st.s.cli(&a)), "règle")
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        let care = add(&[
            "--kind",
            "care",
            "--professional",
            &st.rpps,
            "--detail",
            "equipe-de-soins",
        ]);
        assert_eq!(read("Observation/obs-1", None).0, 200);
        assert_eq!(read("Observation/obs-1/_history/1", None).0, 200);
        let (c, h) = read("Observation/obs-1/_history", None);
        assert_eq!((c, h["type"].as_str()), (200, Some("history")), "{h}");
        let doc = read("DocumentReference/doc-1", None);
        if socle_policy::Matrix::default_matrix().allows(&professions, "34874-8") {
            assert_eq!(doc.0, 200, "{professions:?} : {}", doc.1);
        } else {
            refused(doc, "matrix-denied");
        }
        // The patient masks the document: refused to the care team (not the médecin traitant).
        let mask = add(&["--kind", "mask", "--target", "DocumentReference/doc-1"]);
        refused(read("DocumentReference/doc-1", None), "document-masked");
        refused(
            read("DocumentReference/doc-1/_history/1", None),
            "document-masked",
        );
        refused(
            read("DocumentReference/doc-1/_history", None),
            "document-masked",
        );
        // Nor does its past or its existence come through an empty history page, a missing version, a count or
        // what names it.
        refused(
            read("DocumentReference/doc-1/_history?_count=0", None),
            "document-masked",
        );
        refused(
            read("DocumentReference/doc-1/_history/7", None),
            "document-masked",
        );
        put(
            "Provenance/prov-1",
            json!({"resourceType": "Provenance", "id": "prov-1", "recorded": "2026-11-20T10:00:00+01:00",
            "target": [{"reference": "DocumentReference/doc-1"}, {"reference": "Patient/pat-1"}],
            "agent": [{"who": {"display": "DPI"}}]}),
        );
        for q in [
            "DocumentReference?patient=pat-1&_summary=count",
            "DocumentReference?patient=pat-1&_total=accurate",
            "DocumentReference?patient=pat-1&_revinclude=Provenance:target",
        ] {
            let (c, b) = read(q, None);
            assert_eq!(c, 200, "{q} : {b}");
            assert_eq!(b["total"].as_i64().unwrap_or(0), 0, "{q} : {b}");
            assert!(b["entry"].as_array().is_none_or(Vec::is_empty), "{q} : {b}");
            assert!(!b.to_string().contains("suppressed"), "{q} : {b}");
        }
        // Nor through the links of a sorted page that ends on it: they page by position, not by its sort values.
        put(
            "DocumentReference/doc-2",
            json!({"resourceType": "DocumentReference", "id": "doc-2", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "34874-8"}]},
            "subject": {"reference": "Patient/pat-1"}, "content": [{"attachment": {"contentType": "application/pdf"}}]}),
        );
        let (c, b) = read(
            "DocumentReference?patient=pat-1&_sort=_lastUpdated&_count=1",
            None,
        );
        assert_eq!(c, 200, "{b}");
        let next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(
            next.contains("_offset=1") && !next.contains("_cursor"),
            "{b}"
        );
        assert_eq!(
            fhir(root, "DELETE", "DocumentReference/doc-2", Some(&sys), None).0,
            204
        );
        // The Provenance itself is the patient's data, readable by the care team: it is the document that hides.
        let (c, b) = read("Provenance?patient=pat-1", None);
        assert_eq!((c, b["total"].as_i64()), (200, Some(1)), "{b}");
        printed(
            &st.s
                .cli(&["policy", "revoke", "--patient", "pat-1", "--id", &mask]),
        );
        // A block wins over the relationship and over break-glass.
        let block = add(&["--kind", "block", "--professional", &st.rpps]);
        refused(read("Observation/obs-1", None), "patient-blocked");
        refused(
            read(
                "Observation/obs-1",
                Some("patient inconscient, urgences vitales"),
            ),
            "patient-blocked",
        );
        printed(
            &st.s
                .cli(&["policy", "revoke", "--patient", "pat-1", "--id", &block]),
        );
        printed(
            &st.s
                .cli(&["policy", "revoke", "--patient", "pat-1", "--id", &care]),
        );
        refused(read("Observation/obs-1", None), "no-care-relationship");
        // A Binary that belongs to the patient's record (its securityContext) is decided as that record.
        put(
            "Binary/bin-1",
            json!({"resourceType": "Binary", "id": "bin-1", "contentType": "text/plain",
                   "securityContext": {"reference": "Patient/pat-1"}, "data": "Ym9uam91cg=="}),
        );
        refused(read("Binary/bin-1", None), "no-care-relationship");
        // Break-glass: a reason is mandatory.
        assert_eq!(read("Observation/obs-1", Some("urgence")).0, 400);
        assert_eq!(
            read(
                "Observation/obs-1",
                Some("patient inconscient, urgences vitales")
            )
            .0,
            200
        );
        let (c, trail, _) = fhir(
            root,
            "GET",
            "Patient/pat-1/$audit-trail?_count=50",
            Some(&sys),
            None,
        );
        assert_eq!(c, 200, "{trail}");
        let actions: Vec<&str> = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["subtype"][0]["code"].as_str())
            .collect();
        assert!(actions.contains(&"break-glass"), "{actions:?}");
        // Every decision is in the trail, readable: its reason code, and the motive of the break-glass.
        let decisions: Vec<String> = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| {
                e["resource"]["entity"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|en| en["detail"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d["valueString"].as_str().map(str::to_string))
            .collect();
        for want in [
            "no-care-relationship",
            "patient-blocked",
            "care-relationship",
            "break-glass",
            "patient inconscient, urgences vitales",
        ] {
            assert!(
                decisions.iter().any(|d| d == want),
                "décision {want} absente de la trace : {decisions:?}"
            );
        }
        let bg = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"]["subtype"][0]["code"] == "break-glass")
            .unwrap();
        assert_eq!(
            bg["resource"]["purposeOfEvent"][0]["coding"][0]["code"],
            "ETREAT"
        );
        let store = socle_store::open(st.s.database.as_deref(), st.s.data.path()).unwrap();
        let notes = socle_policy::RuleStore::open(store)
            .unwrap()
            .notifications("pat-1")
            .unwrap();
        assert!(
            notes
                .iter()
                .any(|(k, m, _)| k == "break-glass" && m.contains("urgences vitales")),
            "{notes:?}"
        );
        // Software acting on its own behalf: its scopes decide.
        assert_eq!(
            fhir(root, "GET", "Observation/obs-1", Some(&sys), None).0,
            200
        );

        // Searches by users are about one patient, decided like reads; histories, versions and the trails of
        // others stay closed to users.
        let (c, oo, _) = fhir(root, "GET", "Observation?code=x", Some(&pro), None);
        assert_eq!(c, 403, "{oo}");
        assert!(oo.to_string().contains("précisez le patient"), "{oo}");
        let (c, oo, _) = fhir(root, "GET", "Observation?patient=pat-1", Some(&pro), None);
        assert_eq!(c, 403, "{oo}");
        assert!(oo.to_string().contains("no-care-relationship"), "{oo}");
        add(&[
            "--kind",
            "care",
            "--professional",
            &st.rpps,
            "--detail",
            "medecin-traitant",
        ]);
        let (c, b, _) = fhir(root, "GET", "Observation?patient=pat-1", Some(&pro), None);
        assert_eq!(c, 200, "{b}");
        assert_eq!(b["entry"][0]["resource"]["id"], "obs-1", "{b}");
        // Includes: the same patient's data, decided; another patient's data never comes through a search about
        // this one (here a panel of pat-1 that names a result of pat-2).
        put(
            "Patient/pat-2",
            json!({"resourceType": "Patient", "id": "pat-2", "name": [{"family": "DURAND"}]}),
        );
        put_obs("obs-2", "créatinine", "pat-2", json!({}));
        put_obs(
            "panel-1",
            "bilan",
            "pat-1",
            json!({"hasMember": [{"reference": "Observation/obs-1"}, {"reference": "Observation/obs-2"}]}),
        );
        let (c, b, _) = fhir(
            root,
            "GET",
            "Observation?_id=panel-1&patient=pat-1&_include=Observation:has-member&_include=Observation:subject",
            Some(&pro),
            None,
        );
        assert_eq!(c, 200, "{b}");
        let mut got: Vec<String> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] != "outcome")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["Observation/obs-1", "Observation/panel-1", "Patient/pat-1"],
            "{b}"
        );
        assert!(
            !b.to_string().contains("suppressed"),
            "rien ne dit ce qui a été écarté : {b}"
        );
        // The same search by the software acting on its own behalf brings everything.
        let (_, b, _) = fhir(
            root,
            "GET",
            "Observation?_id=panel-1&_include=Observation:has-member",
            Some(&sys),
            None,
        );
        assert_eq!(b["entry"].as_array().unwrap().len(), 3, "{b}");
        let (c, b, _) = fhir(
            root,
            "GET",
            "Observation?patient=pat-1&_revinclude=Provenance:target",
            Some(&pro),
            None,
        );
        assert_eq!(c, 200, "{b}");
        // `_has` filters on resources the policy has not decided.
        let (c, oo, _) = fhir(
            root,
            "GET",
            "Patient?_id=pat-1&_has:Observation:patient:code=bilan",
            Some(&pro),
            None,
        );
        assert_eq!(c, 403, "{oo}");
        // Modifiers do not scope a search to the patient they name.
        for path in [
            "Patient?_id:not=pat-1",
            "Patient?_id:missing=pat-1",
            "Observation?patient:missing=false",
            "Observation?subject:not=Patient/pat-1",
        ] {
            let (c, oo, _) = fhir(root, "GET", path, Some(&pro), None);
            assert_eq!(c, 403, "{path} : {oo}");
        }
        // A resource moved from pat-2 to pat-1 (an identity correction): its current version is pat-1's, its
        // first was pat-2's and stays out of reach through pat-1's record.
        put_obs("moved", "hémoglobine", "pat-2", json!({}));
        put_obs("moved", "hémoglobine", "pat-1", json!({}));
        assert_eq!(
            fhir(root, "GET", "Observation/moved", Some(&pro), None).0,
            200
        );
        for path in ["Observation/moved/_history/1", "Observation/moved/_history"] {
            let (c, oo, _) = fhir(root, "GET", path, Some(&pro), None);
            assert_eq!(c, 403, "{path} : {oo}");
            assert!(
                oo.to_string().contains("version-of-another-patient"),
                "{oo}"
            );
        }
        assert_eq!(
            fhir(
                root,
                "GET",
                "Observation/moved/_history/1",
                Some(&sys),
                None
            )
            .0,
            200
        );
        // A search outside patient data brings no patient data through its includes, and filters on none.
        let me = info["fhirUser"]
            .as_str()
            .unwrap()
            .trim_start_matches("Practitioner/")
            .to_string();
        put_obs(
            "perf-2",
            "tension",
            "pat-2",
            json!({"performer": [{"reference": format!("Practitioner/{me}")}]}),
        );
        let q = format!("Practitioner?_id={me}&_revinclude=Observation:performer");
        let (_, b, _) = fhir(root, "GET", &q, Some(&sys), None);
        assert!(
            b.to_string().contains("perf-2"),
            "le logiciel la voit : {b}"
        );
        let (c, b, _) = fhir(root, "GET", &q, Some(&pro), None);
        assert_eq!(c, 200, "{b}");
        assert!(!b.to_string().contains("perf-2"), "{b}");
        assert!(b.to_string().contains("portant sur un patient"), "{b}");
        let (c, oo, _) = fhir(
            root,
            "GET",
            &format!("Practitioner?_id={me}&_has:Observation:performer:code=tension"),
            Some(&pro),
            None,
        );
        assert_eq!(c, 403, "{oo}");
        for path in [
            "Observation/_history",
            "_history",
            "Patient/pat-1/$audit-trail",
            "Binary",
            "Binary/_history",
        ] {
            assert_eq!(fhir(root, "GET", path, Some(&pro), None).0, 403, "{path}");
        }
        // The professional's searches are in the patient's access list, with their decision.
        let (_, trail, _) = fhir(
            root,
            "GET",
            "Patient/pat-1/$audit-trail?_count=200",
            Some(&sys),
            None,
        );
        let searches: Vec<Vec<String>> = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["subtype"][0]["code"] == "search")
            .map(|e| {
                e["resource"]["entity"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|en| en["detail"].as_array().cloned().unwrap_or_default())
                    .map(|d| {
                        format!(
                            "{}={}",
                            d["type"].as_str().unwrap(),
                            d["valueString"].as_str().unwrap()
                        )
                    })
                    .collect()
            })
            .collect();
        for want in [
            "decision=care-relationship",
            "decision=no-care-relationship",
            "recherche=_id&patient&_include&_include",
        ] {
            assert!(
                searches.iter().any(|s| s.iter().any(|d| d == want)),
                "{want} : {searches:?}"
            );
        }
        // A document the matrix or a mask keeps from this professional is left out of results, silently; the
        // médecin traitant sees masked documents (the matrix still applies).
        add(&["--kind", "mask", "--target", "DocumentReference/doc-1"]);
        let (c, b, _) = fhir(
            root,
            "GET",
            "DocumentReference?patient=pat-1",
            Some(&pro),
            None,
        );
        assert_eq!(c, 200, "{b}");
        let ids: Vec<&str> = b["entry"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "DocumentReference")
            .filter_map(|e| e["resource"]["id"].as_str())
            .collect();
        if socle_policy::Matrix::default_matrix().allows(&professions, "34874-8") {
            assert_eq!(ids, vec!["doc-1"], "médecin traitant : {b}");
        } else {
            assert!(ids.is_empty(), "{b}");
            // Nothing tells how many documents were left out.
            assert!(!b.to_string().contains("suppressed"), "{b}");
        }

        // Writes of patient data by users: for patients the policy lets them act for, one resource at a time.
        let (code, verifier) = code_for(&mut browser, &st, "openid user/*.cruds", now_step());
        let (_, tok) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        let pro = tok["access_token"].as_str().unwrap().to_string();
        // pat-2 and its obs-2 were stored above (the includes).
        let obs = |p: &str| {
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "pouls"},
            "subject": {"reference": format!("Patient/{p}")}})
        };
        assert_eq!(
            fhir(root, "POST", "Observation", Some(&pro), Some(&obs("pat-1"))).0,
            201
        );
        let (c, oo, _) = fhir(root, "POST", "Observation", Some(&pro), Some(&obs("pat-2")));
        assert_eq!(c, 403, "{oo}");
        assert!(oo.to_string().contains("no-care-relationship"), "{oo}");
        // Moving a resource of pat-2 to pat-1 is a write on pat-2's data too.
        let mut moved = obs("pat-1");
        moved["id"] = "obs-2".into();
        assert_eq!(
            fhir(root, "PUT", "Observation/obs-2", Some(&pro), Some(&moved)).0,
            403
        );
        assert_eq!(
            fhir(root, "DELETE", "Observation/obs-2", Some(&pro), None).0,
            403
        );
        assert_eq!(
            fhir(
                root,
                "PUT",
                "Observation?subject=pat-1",
                Some(&pro),
                Some(&obs("pat-1"))
            )
            .0,
            403
        );
        let tx = |entries: Value| json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let get_entry = tx(json!([{"request": {"method": "GET", "url": "Observation/obs-2"}}]));
        assert_eq!(
            fhir(root, "POST", "", Some(&pro), Some(&get_entry)).0,
            403,
            "lecture dans un Bundle"
        );
        // The same move inside a Bundle, whatever the URL's spelling (leading slash, absolute URL).
        for url in [
            "Observation/obs-2".to_string(),
            "/Observation/obs-2".to_string(),
            format!("{root}/fhir/Observation/obs-2"),
        ] {
            let b =
                tx(json!([{"resource": moved.clone(), "request": {"method": "PUT", "url": url}}]));
            let (c, oo, _) = fhir(root, "POST", "", Some(&pro), Some(&b));
            assert_eq!(c, 403, "{url} : {oo}");
        }
        let (_, still, _) = fhir(root, "GET", "Observation/obs-2", Some(&sys), None);
        assert_eq!(still["subject"]["reference"], "Patient/pat-2", "{still}");
        let other = tx(
            json!([{"resource": obs("pat-2"), "request": {"method": "POST", "url": "Observation"}}]),
        );
        assert_eq!(fhir(root, "POST", "", Some(&pro), Some(&other)).0, 403);
        let mine = tx(
            json!([{"resource": obs("pat-1"), "request": {"method": "POST", "url": "Observation"}}]),
        );
        let (c, b, _) = fhir(root, "POST", "", Some(&pro), Some(&mine));
        assert_eq!(c, 200, "{b}");
        assert_eq!(
            fhir(root, "GET", "Observation/obs-2", Some(&sys), None).0,
            200,
            "rien d'écrit pour pat-2"
        );
    }
}

/// The authorisation matrix: every role × resource type × action against the expected outcome — anonymous,
/// software with read-only and full scopes, a professional without a care relationship, with one, blocked by the
/// patient, in break-glass, and the patient — on the data of two patients and on the public directory.
#[test]
fn authorisation_matrix() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let client = |scope: &str| system_token(&st, "Logiciel", scope);
        let (sys_rs, sys_all) = (client("system/*.rs"), client("system/*.cruds"));
        // P1: a local Patient with a recovered INS (RECUP), who has an account; P2: another patient.
        let r = common::registry(&st.s, 5, 11).remove(0);
        let ins = r["identifier"][0]["value"].as_str().unwrap().to_string();
        let put = |path: &str, body: Value| {
            let (c, oo, _) = fhir(root, "PUT", path, Some(&sys_all), Some(&body));
            assert!(c == 200 || c == 201, "{path} : {oo}");
        };
        put(
            "Patient/p1",
            local("p1", &r, "RECUP", &[insi_date()], Some(&ins)),
        );
        put(
            "Patient/p2",
            json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "AUTRE"}]}),
        );
        let report = |p: &str, text: &str| {
            json!({"resourceType": "DocumentReference", "status": "current", "description": text,
            "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
            "subject": {"reference": format!("Patient/{p}")}, "content": [{"attachment": {"contentType": "application/pdf"}}]})
        };
        for p in ["p1", "p2"] {
            put(
                &format!("Observation/{p}-obs"),
                json!({"resourceType": "Observation", "id": format!("{p}-obs"),
                "status": "final", "code": {"text": "tension"}, "subject": {"reference": format!("Patient/{p}")}}),
            );
            put(
                &format!("DocumentReference/{p}-doc"),
                json!({"resourceType": "DocumentReference", "id": format!("{p}-doc"),
                "status": "current", "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
                "subject": {"reference": format!("Patient/{p}")}, "content": [{"attachment": {"contentType": "application/pdf"}}]}),
            );
        }
        // The patient's account and token (patient realm, TOTP).
        let ptotp = patient_account(&st.s, &ins);
        let patient = patient_token(&st, "Appli", &ins, &ptotp);
        // The professional (pro realm, TOTP: eidas2).
        let mut browser = Browser::new();
        let (code, verifier) = code_for(&mut browser, &st, "openid user/*.cruds", now_step());
        let (_, t) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        let pro = t["access_token"].as_str().unwrap().to_string();

        #[derive(Clone, Copy, PartialEq, Debug)]
        enum Role {
            Anonymous,
            SystemRead,
            SystemAll,
            ProNoCare,
            ProCare,
            ProBlocked,
            ProBreakGlass,
            Patient,
        }
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum Want {
            Ok,
            Unauthenticated,
            Forbidden,
        }
        // `compartment`: the search of the type within the patient's compartment (`Patient/{id}/{type}`).
        let actions = [
            "read",
            "vread",
            "history",
            "search",
            "compartment",
            "everything",
            "create",
            "update",
            "delete",
        ];
        let mut failures = Vec::new();
        let mut checked = 0;
        for role in [
            Role::Anonymous,
            Role::SystemRead,
            Role::SystemAll,
            Role::ProNoCare,
            Role::ProCare,
            Role::ProBlocked,
            Role::ProBreakGlass,
            Role::Patient,
        ] {
            let mut rules = Vec::new();
            let mut add = |args: &[&str]| {
                let mut a = vec!["policy", "add-rule", "--patient", "p1"];
                a.extend_from_slice(args);
                rules.push(
                    after(&printed(&st.s.cli(&a)), "règle")
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_string(),
                );
            };
            match role {
                Role::ProCare => add(&[
                    "--kind",
                    "care",
                    "--professional",
                    &st.rpps,
                    "--detail",
                    "medecin-traitant",
                ]),
                Role::ProBlocked => {
                    add(&[
                        "--kind",
                        "care",
                        "--professional",
                        &st.rpps,
                        "--detail",
                        "medecin-traitant",
                    ]);
                    add(&["--kind", "block", "--professional", &st.rpps]);
                }
                _ => {}
            }
            let token = match role {
                Role::Anonymous => None,
                Role::SystemRead => Some(sys_rs.as_str()),
                Role::SystemAll => Some(sys_all.as_str()),
                Role::Patient => Some(patient.as_str()),
                _ => Some(pro.as_str()),
            };
            for (rtype, owner) in [
                ("Observation", Some("p1")),
                ("Observation", Some("p2")),
                ("DocumentReference", Some("p1")),
                ("Patient", Some("p1")),
                ("Patient", Some("p2")),
                ("Practitioner", None),
            ] {
                for action in actions {
                    // Patients and practitioners are not created or deleted here (identity and directory rules).
                    if (rtype == "Patient" || rtype == "Practitioner")
                        && matches!(action, "create" | "delete")
                        || rtype == "Practitioner"
                            && matches!(action, "vread" | "history" | "compartment")
                        || rtype != "Patient" && action == "everything"
                    {
                        continue;
                    }
                    let write = matches!(action, "create" | "update" | "delete");
                    // Documents (here a professional's report without an author of this test): users feed and
                    // replace them by ITI-65 only, never by a plain create or update; only their producer
                    // deletes them — neither a colleague nor break-glass; the patient deletes what they see of
                    // their record.
                    let document_rule = matches!(
                        (rtype, action, role),
                        (
                            "DocumentReference",
                            "create" | "update",
                            Role::ProCare | Role::ProBreakGlass | Role::Patient
                        ) | (
                            "DocumentReference",
                            "delete",
                            Role::ProCare | Role::ProBreakGlass
                        )
                    );
                    let want = match (role, owner) {
                        _ if document_rule => Want::Forbidden,
                        (Role::Anonymous, None) if !write => Want::Ok,
                        (Role::Anonymous, _) => Want::Unauthenticated,
                        (Role::SystemRead, _) => {
                            if write {
                                Want::Forbidden
                            } else {
                                Want::Ok
                            }
                        }
                        // The Annuaire is not users' to change: only software with system scopes.
                        (Role::SystemAll, _) => Want::Ok,
                        (_, None) if write => Want::Forbidden,
                        (Role::ProBreakGlass, _) => Want::Ok,
                        (_, None) => Want::Ok,
                        // A patient does not edit their identity record (identity vigilance does).
                        (Role::Patient, _) if rtype == "Patient" && write => Want::Forbidden,
                        (Role::ProCare, Some("p1")) | (Role::Patient, Some("p1")) => Want::Ok,
                        _ => Want::Forbidden,
                    };
                    let tag = format!("{role:?}-{rtype}-{}-{action}", owner.unwrap_or("dir"));
                    let target = owner.unwrap_or("");
                    let practitioner = info_practitioner(root, &sys_rs);
                    let (method, path, body) = match (rtype, action) {
                        (t, "compartment") => ("GET", format!("Patient/{target}/{t}"), None),
                        (_, "everything") => ("GET", format!("Patient/{target}/$everything"), None),
                        ("Practitioner", "read") => {
                            ("GET", format!("Practitioner/{practitioner}"), None)
                        }
                        ("Practitioner", "search") => {
                            ("GET", "Practitioner?_count=1".to_string(), None)
                        }
                        ("Patient", "read") => ("GET", format!("Patient/{target}"), None),
                        ("Patient", "vread") => {
                            ("GET", format!("Patient/{target}/_history/1"), None)
                        }
                        ("Patient", "history") => {
                            ("GET", format!("Patient/{target}/_history"), None)
                        }
                        (t, "vread" | "history") => (
                            "GET",
                            format!(
                                "{t}/{target}-{}/_history{}",
                                if t == "Observation" { "obs" } else { "doc" },
                                if action == "vread" { "/1" } else { "" }
                            ),
                            None,
                        ),
                        ("Patient", "search") => ("GET", format!("Patient?_id={target}"), None),
                        ("Practitioner", "update") => {
                            let (_, cur, _) = fhir(
                                root,
                                "GET",
                                &format!("Practitioner/{practitioner}"),
                                Some(&sys_all),
                                None,
                            );
                            ("PUT", format!("Practitioner/{practitioner}"), Some(cur))
                        }
                        ("Patient", "update") => {
                            let (_, cur, _) = fhir(
                                root,
                                "GET",
                                &format!("Patient/{target}"),
                                Some(&sys_all),
                                None,
                            );
                            ("PUT", format!("Patient/{target}"), Some(cur))
                        }
                        (t, "read") => (
                            "GET",
                            format!(
                                "{t}/{target}-{}",
                                if t == "Observation" { "obs" } else { "doc" }
                            ),
                            None,
                        ),
                        (t, "search") => ("GET", format!("{t}?patient={target}"), None),
                        ("DocumentReference", "create") => (
                            "POST",
                            "DocumentReference".to_string(),
                            Some(report(target, &tag)),
                        ),
                        ("DocumentReference", "update") => {
                            let mut d = report(target, "mis à jour");
                            d["id"] = json!(format!("{target}-doc"));
                            ("PUT", format!("DocumentReference/{target}-doc"), Some(d))
                        }
                        ("DocumentReference", _) => {
                            // Delete: a fresh document of that patient, stored by software.
                            let (c, made, _) = fhir(
                                root,
                                "POST",
                                "DocumentReference",
                                Some(&sys_all),
                                Some(&report(target, "à supprimer")),
                            );
                            assert_eq!(c, 201, "{made}");
                            (
                                "DELETE",
                                format!("DocumentReference/{}", made["id"].as_str().unwrap()),
                                None,
                            )
                        }
                        (_, "create") => (
                            "POST",
                            "Observation".to_string(),
                            Some(json!({"resourceType": "Observation", "status": "final",
                            "code": {"text": tag.clone()}, "subject": {"reference": format!("Patient/{target}")}})),
                        ),
                        (_, "update") => (
                            "PUT",
                            format!("Observation/{target}-obs"),
                            Some(json!({"resourceType": "Observation",
                            "id": format!("{target}-obs"), "status": "amended", "code": {"text": "tension"},
                            "subject": {"reference": format!("Patient/{target}")}})),
                        ),
                        _ => {
                            // Delete: a fresh resource of that patient, made by software.
                            let (c, made, _) = fhir(
                                root,
                                "POST",
                                "Observation",
                                Some(&sys_all),
                                Some(&json!({"resourceType": "Observation",
                                "status": "final", "code": {"text": "à supprimer"}, "subject": {"reference": format!("Patient/{target}")}})),
                            );
                            assert_eq!(c, 201, "{made}");
                            (
                                "DELETE",
                                format!("Observation/{}", made["id"].as_str().unwrap()),
                                None,
                            )
                        }
                    };
                    let mut req = ureq::request(method, &format!("{root}/fhir/{path}"));
                    if let Some(t) = token {
                        req = req.set("Authorization", &format!("Bearer {t}"));
                    }
                    if role == Role::ProBreakGlass {
                        req = req.set(
                            "X-Socle-Break-Glass",
                            "prise%20en%20charge%20aux%20urgences",
                        );
                    }
                    let res = match &body {
                        Some(b) => req
                            .set("Content-Type", "application/fhir+json")
                            .send_string(&b.to_string()),
                        None => req.call(),
                    };
                    let status = match res {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(c, _)) => c,
                        Err(e) => panic!("{e}"),
                    };
                    let got = match status {
                        200..=299 => Want::Ok,
                        401 => Want::Unauthenticated,
                        403 => Want::Forbidden,
                        _ => {
                            failures.push(format!("{tag} : {method} {path} → {status}"));
                            continue;
                        }
                    };
                    checked += 1;
                    if got != want {
                        failures.push(format!(
                            "{tag} : {method} {path} → {status}, attendu {want:?}"
                        ));
                    }
                }
            }
            for id in rules {
                printed(
                    &st.s
                        .cli(&["policy", "revoke", "--patient", "p1", "--id", &id]),
                );
            }
        }
        assert!(
            failures.is_empty(),
            "{} écarts sur {checked} cas :\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(checked > 100, "{checked}");
        println!("matrice d'autorisation : {checked} cas sans écart");
        // A write only break-glass let through gets its distinct record; a refused write is in the patient's
        // trail with its reason.
        let put_obs = |id: &str, bg: bool| -> u16 {
            let mut req = ureq::put(&format!("{root}/fhir/Observation/{id}"))
                .set("Authorization", &format!("Bearer {pro}"))
                .set("Content-Type", "application/fhir+json");
            if bg {
                req = req.set(
                    "X-Socle-Break-Glass",
                    "prise%20en%20charge%20aux%20urgences",
                );
            }
            let body = json!({"resourceType": "Observation", "id": id, "status": "final",
                              "code": {"text": "Glycémie"}, "subject": {"reference": "Patient/p2"}});
            match req.send_string(&body.to_string()) {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(c, _)) => c,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(put_obs("p2-refusee", false), 403);
        assert_eq!(put_obs("p2-urgence", true), 201);
        let (c, trail, _) = fhir(
            root,
            "GET",
            "Patient/p2/$audit-trail?_count=1000",
            Some(&sys_rs),
            None,
        );
        assert_eq!(c, 200, "{trail}");
        let events: Vec<&Value> = trail["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        let names = |e: &Value, what: &str| {
            e["entity"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["what"]["reference"]
                        .as_str()
                        .is_some_and(|r| r.starts_with(what))
                })
            })
        };
        assert!(
            events
                .iter()
                .any(|e| e["subtype"][0]["code"] == "break-glass"
                    && names(e, "Observation/p2-urgence")
                    && e.to_string().contains("prise en charge aux urgences")),
            "{trail}"
        );
        assert!(
            events.iter().any(|e| e["subtype"][0]["code"] == "update"
                && e["outcome"] == "4"
                && names(e, "Observation/p2-refusee")
                && e.to_string().contains("no-care-relationship")),
            "{trail}"
        );

        // The patient manages their own rules through the API; structures record care relationships.
        let params = |pairs: &[(&str, &str)]| {
            json!({"resourceType": "Parameters", "parameter":
            pairs.iter().map(|(n, v)| json!({"name": n, "valueString": v})).collect::<Vec<_>>()})
        };
        let (c, b, _) = fhir(
            root,
            "POST",
            "Patient/p1/$policy-rules",
            Some(&sys_all),
            Some(&params(&[
                ("kind", "care"),
                ("professional", st.rpps.as_str()),
                ("detail", "equipe-de-soins"),
            ])),
        );
        assert_eq!(c, 201, "{b}");
        let care = b["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            fhir(root, "GET", "Observation/p1-obs", Some(&pro), None).0,
            200
        );
        let (c, b, _) = fhir(
            root,
            "POST",
            "Patient/p1/$policy-rules",
            Some(&patient),
            Some(&params(&[
                ("kind", "block"),
                ("professional", st.rpps.as_str()),
            ])),
        );
        assert_eq!(c, 201, "{b}");
        let block = b["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .to_string();
        let (c, oo, _) = fhir(root, "GET", "Observation/p1-obs", Some(&pro), None);
        assert_eq!(c, 403);
        assert!(oo.to_string().contains("patient-blocked"), "{oo}");
        // Not a kind a patient sets, not another patient's record, not a structure's rule to revoke.
        let (c, _, _) = fhir(
            root,
            "POST",
            "Patient/p1/$policy-rules",
            Some(&patient),
            Some(&params(&[
                ("kind", "care"),
                ("professional", st.rpps.as_str()),
                ("detail", "medecin-traitant"),
            ])),
        );
        assert_eq!(c, 403);
        // App consents are the identity provider's, not rules.
        let (c, oo, _) = fhir(
            root,
            "POST",
            "Patient/p1/$policy-rules",
            Some(&patient),
            Some(&params(&[
                ("kind", "consent"),
                ("actor", "app-1"),
                ("detail", "read"),
            ])),
        );
        assert_eq!(c, 400, "{oo}");
        assert!(oo.to_string().contains("/auth/patient/consents"), "{oo}");
        assert_eq!(
            fhir(
                root,
                "GET",
                "Patient/p2/$policy-rules",
                Some(&patient),
                None
            )
            .0,
            403
        );
        assert_eq!(
            fhir(root, "GET", "Patient/p1/$policy-rules", Some(&pro), None).0,
            403
        );
        assert_eq!(
            fhir(
                root,
                "DELETE",
                &format!("Patient/p1/$policy-rules/{care}"),
                Some(&patient),
                None
            )
            .0,
            403
        );
        // The list shows the rules and the break-glass notices of the matrix run above.
        let (c, list, _) = fhir(
            root,
            "GET",
            "Patient/p1/$policy-rules",
            Some(&patient),
            None,
        );
        assert_eq!(c, 200, "{list}");
        let text = list.to_string();
        assert!(
            text.contains(&block) && text.contains(&care) && text.contains("break-glass"),
            "{list}"
        );
        assert_eq!(
            fhir(
                root,
                "DELETE",
                &format!("Patient/p1/$policy-rules/{block}"),
                Some(&patient),
                None
            )
            .0,
            204
        );
        assert_eq!(
            fhir(root, "GET", "Observation/p1-obs", Some(&pro), None).0,
            200,
            "déblocage"
        );
        // A delegation code (MES-6): the patient gives it, the professional claims it once, then reads.
        assert_eq!(
            fhir(
                root,
                "DELETE",
                &format!("Patient/p1/$policy-rules/{care}"),
                Some(&sys_all),
                None
            )
            .0,
            204
        );
        assert_eq!(
            fhir(root, "GET", "Observation/p1-obs", Some(&pro), None).0,
            403
        );
        // Delegated sections: one document type shares neither the measures nor anything else.
        let delegate = |sections: &[&str]| {
            let mut params: Vec<Value> = sections
                .iter()
                .map(|s| json!({"name": "section", "valueString": s}))
                .collect();
            params.push(json!({"name": "days", "valueInteger": 7}));
            fhir(
                root,
                "POST",
                "Patient/p1/$delegation-code",
                Some(&patient),
                Some(&json!({"resourceType": "Parameters", "parameter": params})),
            )
        };
        let (c, b, _) = delegate(&["<script>"]);
        assert_eq!(c, 422, "{b}");
        assert!(b.to_string().contains("rubrique invalide"), "{b}");
        let (c, b, _) = delegate(&["11502-2"]);
        assert_eq!(c, 201, "{b}");
        let narrow = b["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .to_string();
        let (c, b, _) = fhir(
            root,
            "POST",
            "Patient/$delegation-claim",
            Some(&pro),
            Some(
                &json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": narrow}]}),
            ),
        );
        assert_eq!(c, 200, "{b}");
        let (c, oo, _) = fhir(root, "GET", "Observation/p1-obs", Some(&pro), None);
        assert_eq!(c, 403, "{oo}");
        assert!(oo.to_string().contains("section-not-delegated"), "{oo}");
        let (c, oo, _) = fhir(root, "GET", "Observation?patient=p1", Some(&pro), None);
        assert_eq!(c, 403, "{oo}");
        assert_eq!(fhir(root, "GET", "Patient/p1", Some(&pro), None).0, 200);
        let (c, b, _) = delegate(&["*"]);
        assert_eq!(c, 201, "{b}");
        let code = b["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            fhir(
                root,
                "POST",
                "Patient/p2/$delegation-code",
                Some(&patient),
                Some(&b)
            )
            .0,
            403
        );
        let claim = json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": code}]});
        let (c, b, _) = fhir(
            root,
            "POST",
            "Patient/$delegation-claim",
            Some(&pro),
            Some(&claim),
        );
        assert_eq!(c, 200, "{b}");
        assert_eq!(
            b["parameter"][0]["valueReference"]["reference"],
            "Patient/p1"
        );
        assert_eq!(
            fhir(
                root,
                "POST",
                "Patient/$delegation-claim",
                Some(&pro),
                Some(&claim)
            )
            .0,
            403,
            "code usage unique"
        );
        let (c, oo, _) = fhir(root, "GET", "Observation/p1-obs", Some(&pro), None);
        assert_eq!(c, 200, "{oo}");
        let (_, list, _) = fhir(
            root,
            "GET",
            "Patient/p1/$policy-rules",
            Some(&patient),
            None,
        );
        assert!(list.to_string().contains("delegation"), "{list}");
        // Identity vigilance across patients is for the identity staff's software.
        assert_eq!(
            fhir(root, "GET", "Patient/p1/$duplicates", Some(&pro), None).0,
            403
        );
        assert_eq!(
            fhir(root, "GET", "Patient/p1/$duplicates", Some(&sys_rs), None).0,
            200
        );
    }
}

/// The id of one professional of the directory.
fn info_practitioner(root: &str, token: &str) -> String {
    let (_, b, _) = fhir(root, "GET", "Practitioner?_count=1", Some(token), None);
    b["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Patients authorise each application (MES-5): a consent page after login, "refuse" sends the application an
/// `access_denied`, "accept" is remembered; the patient lists and withdraws consents, and a withdrawn
/// application's tokens stop working at once.
#[test]
fn patients_consent_to_each_application() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let app = after(
            &printed(&st.s.cli(&[
                "clients",
                "register",
                "--realm",
                "patient",
                "--name",
                "Carnet de santé",
                "--redirect-uri",
                REDIRECT,
                "--auth-method",
                "none",
            ])),
            "client_id:",
        );
        let verifier = socle_auth::random_token(32);
        let url = format!(
            "{root}/auth/patient/authorize?response_type=code&client_id={app}&redirect_uri={REDIRECT}&scope=openid%20patient/*.rs&state=z&code_challenge={}&code_challenge_method=S256",
            socle_auth::pkce_challenge(&verifier)
        );
        let mut b = Browser::new();
        // Up to the consent page, then refuse.
        let p = b.get(&url);
        let mut fields = hidden(&p.body);
        fields.push(("login".into(), st.ins.clone()));
        fields.push(("password".into(), PASSWORD.into()));
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let p = b.post(&format!("{root}{}", form_action(&p.body)), &f);
        let mut fields = hidden(&p.body);
        fields.push((
            "code".into(),
            socle_auth::totp::hotp(&st.patient_totp, now_step(), 6),
        ));
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let p = b.post(&format!("{root}{}", form_action(&p.body)), &f);
        assert!(
            p.body.contains("Carnet de santé")
                && p.body.contains("consulter toutes vos données de santé"),
            "{}",
            p.body
        );
        let p = consent(&mut b, root, p, "refuse");
        assert_eq!(p.status, 303);
        let q = query_of(p.location.as_deref().unwrap());
        assert_eq!(
            (
                q.get("error").map(String::as_str),
                q.get("state").map(String::as_str)
            ),
            (Some("access_denied"), Some("z"))
        );
        // Same browser (session): the consent page again, accepted this time.
        let p = b.get(&url);
        let p = consent(&mut b, root, p, "accept");
        assert_eq!(p.status, 303, "{}", p.body);
        let code = query_of(p.location.as_deref().unwrap())["code"].clone();
        let (_, t) = token_post(
            root,
            "patient",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        let token = t["access_token"].as_str().unwrap().to_string();
        // Remembered: the next authorization goes straight back.
        assert_eq!(b.get(&url).status, 303);
        let list: Value = ureq::get(&format!("{root}/auth/patient/consents"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(list["consents"][0]["client_id"], app.as_str(), "{list}");
        assert_eq!(list["consents"][0]["scope"], "patient/*.rs");
        // Another application authorised by the same person: the first neither sees nor withdraws its consent;
        // the person's portal (scope `consents`) sees and manages both.
        let register = |name: &str, scope: &str| {
            after(
                &printed(&st.s.cli(&[
                    "clients",
                    "register",
                    "--realm",
                    "patient",
                    "--name",
                    name,
                    "--redirect-uri",
                    REDIRECT,
                    "--auth-method",
                    "none",
                    "--scope",
                    scope,
                ])),
                "client_id:",
            )
        };
        let other = register("Agenda santé", "openid patient/Appointment.rs");
        let p = b.get(&format!(
            "{root}/auth/patient/authorize?response_type=code&client_id={other}&redirect_uri={REDIRECT}&scope=openid%20patient/Appointment.rs&code_challenge={}&code_challenge_method=S256",
            socle_auth::pkce_challenge("autre-verificateur-de-test-assez-long")
        ));
        let p = consent(&mut b, root, p, "accept");
        assert_eq!(p.status, 303, "{}", p.body);
        let listed = |token: &str| -> Vec<String> {
            let v: Value = ureq::get(&format!("{root}/auth/patient/consents"))
                .set("Authorization", &format!("Bearer {token}"))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
            v["consents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["client_id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(listed(&token), vec![app.clone()]);
        let r = ureq::post(&format!("{root}/auth/patient/consents/revoke"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_form(&[("client_id", other.as_str())]);
        assert!(matches!(r, Err(ureq::Error::Status(403, _))), "{r:?}");
        let portal = register("Mon portail", "openid consents");
        let v = "verificateur-du-portail-de-test-assez-long";
        let p = b.get(&format!(
            "{root}/auth/patient/authorize?response_type=code&client_id={portal}&redirect_uri={REDIRECT}&scope=openid%20consents&code_challenge={}&code_challenge_method=S256",
            socle_auth::pkce_challenge(v)
        ));
        assert_eq!(p.status, 303, "{}", p.body);
        let (c, pt) = token_post(
            root,
            "patient",
            &[
                ("grant_type", "authorization_code"),
                ("code", &query_of(p.location.as_deref().unwrap())["code"]),
                ("client_id", &portal),
                ("code_verifier", v),
            ],
            None,
        );
        assert_eq!(c, 200, "{pt}");
        let portal_token = pt["access_token"].as_str().unwrap().to_string();
        let mut all = listed(&portal_token);
        all.sort();
        let mut want = vec![app.clone(), other.clone()];
        want.sort();
        assert_eq!(all, want);
        let r = ureq::post(&format!("{root}/auth/patient/consents/revoke"))
            .set("Authorization", &format!("Bearer {portal_token}"))
            .send_form(&[("client_id", other.as_str())]);
        assert_eq!(r.map(|r| r.status()).unwrap_or(0), 200);
        assert_eq!(
            fhir(root, "GET", "Practitioner?_count=1", Some(&token), None).0,
            200
        );
        let r = ureq::post(&format!("{root}/auth/patient/consents/revoke"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_form(&[("client_id", app.as_str())]);
        assert_eq!(r.map(|r| r.status()).unwrap_or(0), 200);
        assert_eq!(
            fhir(root, "GET", "Practitioner?_count=1", Some(&token), None).0,
            401,
            "consentement retiré"
        );
        // Asked again at the next authorization.
        let p = b.get(&url);
        assert!(p.body.contains("name=\"decision\""), "{}", p.body);
    }
}

/// The DMP under the policy engine with real tokens: ITI-65 feeds, ITI-67 finds and ITI-68 retrievals by a
/// professional (care relationship, matrix, masks, break-glass) and by the patient (visibility labels,
/// announcement, masking, closure), each decision in the patient's trail.
#[test]
fn dmp_access_through_the_policy() {
    use socle_dmp::sample::{self, SampleDoc};
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let sys = system_token(&st, "DPI", "system/*.cruds");
        // A person of the registry (the fixture's second one), qualified, whose account is created once the local
        // record exists (the account is bound to it then).
        let mut g = socle_ins::generate::PersonGenerator::new(7);
        g.next_person();
        let person = g.next_person();
        let r = person.to_fhir();
        let (c, oo, _) = fhir(
            root,
            "PUT",
            "Patient/pd",
            Some(&sys),
            Some(&local(
                "pd",
                &r,
                "QUAL",
                &[
                    insi_date(),
                    json!({"url": "validationMode", "valueCoding": {"code": "CN"}}),
                ],
                Some(&person.matricule),
            )),
        );
        assert_eq!(c, 201, "{oo}");
        let ptotp = patient_account(&st.s, &person.matricule);
        let who = sample::Person {
            ins_oid: person.system.trim_start_matches("urn:oid:").into(),
            ins: person.matricule.clone(),
            family: person.family.clone(),
            given: person.given[0].clone(),
            gender: if person.gender == "male" { "M" } else { "F" }.into(),
            birth: person.birth_date.replace('-', ""),
        };
        let feed = |token: &str, d: SampleDoc, sub: &str| -> (u16, Value) {
            let cda = sample::cda_n1(&who, &d);
            let (c, v, _) = fhir(
                root,
                "POST",
                "",
                Some(token),
                Some(&sample::provide_bundle("pd", sub, &[(d, cda)])),
            );
            (c, v)
        };
        let doc_of = |v: &Value| -> String {
            v["entry"][1]["response"]["location"]
                .as_str()
                .unwrap()
                .split('/')
                .nth_back(2)
                .unwrap()
                .to_string()
        };
        // A care-episode summary: readable by every profession with a care relationship (shipped matrix).
        let summary = |ext: &str| {
            let mut d = SampleDoc::report(ext, 5_000);
            d.type_code = "34133-9".into();
            d.type_display = "Synthèse d'épisode de soins".into();
            d
        };
        let (c, v) = feed(&sys, summary("A"), "SA");
        assert_eq!(c, 200, "{v}");
        let a = doc_of(&v);
        let mut hidden = summary("B");
        hidden.labels = vec![(
            "urn:oid:1.2.250.1.213.1.1.4.13".into(),
            "INVISIBLE_PATIENT".into(),
        )];
        let (c, v) = feed(&sys, hidden, "SB");
        assert_eq!(c, 200, "{v}");
        let b = doc_of(&v);
        let mut masked = summary("C");
        masked.labels = vec![("urn:oid:1.2.250.1.213.1.1.4.13".into(), "MASQUE_PS".into())];
        let (c, v) = feed(&sys, masked, "SC");
        assert_eq!(c, 200, "{v}");
        let cdoc = doc_of(&v);
        let binary = |doc: &str| -> String {
            let (c, v, _) = fhir(
                root,
                "GET",
                &format!("DocumentReference/{doc}"),
                Some(&sys),
                None,
            );
            assert_eq!(c, 200, "{v}");
            v["content"][0]["attachment"]["url"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (bin_a, bin_b, bin_c) = (binary(&a), binary(&b), binary(&cdoc));
        // A consultation report: the matrix decides by profession.
        let (c, v) = feed(&sys, SampleDoc::report("D", 5_000), "SD");
        assert_eq!(c, 200, "{v}");
        let d = doc_of(&v);

        // The professional (eidas2) and the patient.
        let (pro, info, _) = pro_token(&st, "openid user/*.cruds");
        let professions: Vec<String> = info["profession"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let patient = patient_token(&st, "Mon Espace Santé", &person.matricule, &ptotp);

        // ITI-68 with a token: the bytes, or the refusal of the document's decision.
        let raw = |token: &str, url: &str, bg: Option<&str>| -> (u16, String) {
            let mut req = ureq::get(&format!("{root}/fhir/{url}"))
                .set("Authorization", &format!("Bearer {token}"))
                .set("Accept", "text/xml");
            if let Some(r) = bg {
                req = req.set(
                    "X-Socle-Break-Glass",
                    &form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>(),
                );
            }
            match req.call() {
                Ok(r) => (r.status(), r.into_string().unwrap()),
                Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
                Err(e) => panic!("{e}"),
            }
        };
        let read = |token: &str, path: &str| -> (u16, Value) {
            let (c, v, _) = fhir(root, "GET", path, Some(token), None);
            (c, v)
        };
        let refused = |(c, v): (u16, String), code: &str| {
            assert_eq!(c, 403, "{v}");
            assert!(v.contains(code), "{code} : {v}");
        };
        let refused_json = |(c, v): (u16, Value), code: &str| {
            assert_eq!(c, 403, "{v}");
            assert!(v.to_string().contains(code), "{code} : {v}");
        };

        // Without a care relationship: nothing, neither the metadata nor the bytes nor a feed.
        refused_json(
            read(&pro, &format!("DocumentReference/{a}")),
            "no-care-relationship",
        );
        refused(raw(&pro, &bin_a, None), "no-care-relationship");
        refused_json(
            read(&pro, "DocumentReference?patient=pd"),
            "no-care-relationship",
        );
        let (c, v) = feed(&pro, SampleDoc::report("P1", 1_000), "SP1");
        assert_eq!(c, 403, "{v}");
        // Break-glass: the document, with its own trail record and a notice to the patient.
        let (c, body) = raw(&pro, &bin_a, Some("patient inconscient aux urgences"));
        assert_eq!(c, 200, "{body}");
        assert!(body.starts_with("<?xml"));

        // With a care relationship: the matrix decides; masked documents stay refused.
        let care = after(
            &printed(&st.s.cli(&[
                "policy",
                "add-rule",
                "--patient",
                "pd",
                "--kind",
                "care",
                "--professional",
                &st.rpps,
                "--detail",
                "equipe-de-soins",
            ])),
            "règle",
        );
        let care = care.split_whitespace().next().unwrap().to_string();
        assert_eq!(read(&pro, &format!("DocumentReference/{a}")).0, 200);
        let (c, body) = raw(&pro, &bin_a, None);
        assert_eq!(c, 200, "{body}");
        let (c, v) = read(&pro, "DocumentReference?patient=pd&status=current");
        assert_eq!(c, 200, "{v}");
        let found: Vec<&str> = v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["id"].as_str())
            .collect();
        assert!(
            found.contains(&a.as_str()) && !found.contains(&cdoc.as_str()),
            "{found:?}"
        );
        // The whole record (`$everything`): decided the same way, the masked document left out.
        let (c, v) = read(&pro, "Patient/pd/$everything?_count=1000");
        assert_eq!(c, 200, "{v}");
        let everything = common::entry_ids(&v);
        assert!(
            everything.contains(&"pd".to_string())
                && everything.contains(&a)
                && !everything.contains(&cdoc),
            "{everything:?}"
        );
        if socle_policy::Matrix::default_matrix().allows(&professions, "11488-4") {
            assert_eq!(read(&pro, &format!("DocumentReference/{d}")).0, 200);
            assert!(found.contains(&d.as_str()), "{found:?}");
        } else {
            refused_json(
                read(&pro, &format!("DocumentReference/{d}")),
                "matrix-denied",
            );
            assert!(!found.contains(&d.as_str()), "{found:?}");
        }
        // The professional feeds the record too.
        let (c, v) = feed(&pro, summary("P2"), "SP2");
        assert_eq!(c, 200, "{v}");
        refused_json(
            read(&pro, &format!("DocumentReference/{cdoc}")),
            "document-masked",
        );
        refused(raw(&pro, &bin_c, None), "document-masked");

        // The patient: their documents, except one not announced yet; then announced by the professional.
        let (c, v) = read(&patient, &format!("DocumentReference/{a}"));
        assert_eq!(c, 200, "{v}");
        assert_eq!(raw(&patient, &bin_a, None).0, 200);
        refused_json(
            read(&patient, &format!("DocumentReference/{b}")),
            "hidden-from-patient",
        );
        refused(raw(&patient, &bin_b, None), "hidden-from-patient");
        let (c, v) = read(&patient, "Patient/pd/$everything?_count=1000");
        assert_eq!(c, 200, "{v}");
        let everything = v.to_string();
        assert!(
            everything.contains(a.as_str())
                && !everything.contains(&format!("DocumentReference/{b}")),
            "{everything}"
        );
        assert_eq!(read(&patient, "Patient/other/$everything").0, 403);
        // Its versions and history too; the patient's own document's history is theirs to read.
        refused_json(
            read(&patient, &format!("DocumentReference/{b}/_history/1")),
            "hidden-from-patient",
        );
        refused_json(
            read(&patient, &format!("DocumentReference/{b}/_history")),
            "hidden-from-patient",
        );
        let (c, v) = read(&patient, &format!("DocumentReference/{a}/_history"));
        assert_eq!(
            (c, v["entry"].as_array().map(Vec::len)),
            (200, Some(1)),
            "{v}"
        );
        let (c, v, _) = fhir(
            root,
            "POST",
            &format!("DocumentReference/{b}/$dmp-announce"),
            Some(&patient),
            Some(&json!({})),
        );
        assert_eq!(c, 403, "le patient n'annonce pas lui-même : {v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            &format!("DocumentReference/{b}/$dmp-announce"),
            Some(&pro),
            Some(&json!({})),
        );
        assert_eq!(c, 200, "{v}");
        assert_eq!(raw(&patient, &bin_b, None).0, 200);
        // The patient masks a document from professionals, then unmasks it.
        let (c, v, _) = fhir(
            root,
            "POST",
            &format!("DocumentReference/{a}/$dmp-mask"),
            Some(&patient),
            Some(&json!({})),
        );
        assert_eq!(c, 200, "{v}");
        refused(raw(&pro, &bin_a, None), "document-masked");
        let (c, _, _) = fhir(
            root,
            "POST",
            &format!("DocumentReference/{a}/$dmp-mask"),
            Some(&pro),
            Some(&json!({})),
        );
        assert_eq!(
            c, 403,
            "un professionnel ne masque pas à la place du patient"
        );
        let (c, _, _) = fhir(
            root,
            "POST",
            &format!("DocumentReference/{a}/$dmp-unmask"),
            Some(&patient),
            Some(&json!({})),
        );
        assert_eq!(c, 200);
        // The patient adds their own document (a PDF, in a patient category); not a professional's category.
        let mut own = SampleDoc::report("PAT-1", 0);
        own.type_code = "DOCPAT04".into();
        own.type_display = "CR déposé par le patient".into();
        let pdf = sample::pdf(3_000);
        let mut m = sample::document_reference("pd", &own, &pdf, "");
        m["content"][0]["attachment"]["contentType"] = json!("application/pdf");
        let (c, v_own, _) = fhir(
            root,
            "POST",
            "",
            Some(&patient),
            Some(&sample::provide_bundle_with(
                "pd",
                "SPAT1",
                &[(m, pdf.clone())],
            )),
        );
        assert_eq!(c, 200, "{v_own}");
        let (c, v) = feed(&patient, summary("PAT-2"), "SPAT2");
        assert_eq!(c, 422, "{v}");
        assert!(v.to_string().contains("catégories patient"), "{v}");
        let own_id = doc_of(&v_own);
        // The base without its final slash takes the same feed.
        let mut own3 = own.clone();
        own3.id_extension = "PAT-3".into();
        let mut m = sample::document_reference("pd", &own3, &pdf, "");
        m["content"][0]["attachment"]["contentType"] = json!("application/pdf");
        let r = ureq::post(&format!("{root}/fhir"))
            .set("Authorization", &format!("Bearer {patient}"))
            .set("Content-Type", "application/fhir+json")
            .send_string(
                &sample::provide_bundle_with("pd", "SPAT3", &[(m, pdf.clone())]).to_string(),
            );
        assert_eq!(
            r.map(|r| r.status()).unwrap_or_else(|e| match e {
                ureq::Error::Status(c, r) => panic!("{c} {}", r.into_string().unwrap_or_default()),
                e => panic!("{e}"),
            }),
            200
        );
        // A Binary that names nothing it belongs to (written by software) is not for users; users' Binaries
        // name theirs.
        let (c, loose, _) = fhir(
            root,
            "POST",
            "Binary",
            Some(&sys),
            Some(
                &json!({"resourceType": "Binary", "contentType": "text/plain", "data": "c2VjcmV0"}),
            ),
        );
        assert_eq!(c, 201, "{loose}");
        for token in [&patient, &pro] {
            let (c, v) = read(token, &format!("Binary/{}", loose["id"].as_str().unwrap()));
            assert_eq!(c, 403, "{v}");
            assert!(v.to_string().contains("binary-without-context"), "{v}");
        }
        let (c, v, _) = fhir(
            root,
            "POST",
            "Binary",
            Some(&patient),
            Some(
                &json!({"resourceType": "Binary", "contentType": "text/plain", "data": "c2VjcmV0"}),
            ),
        );
        assert_eq!(c, 403, "{v}");

        // Only a document's producer changes it (DMP-6): the professional replaces their own document, not a
        // colleague's, and neither updates nor deletes another author's.
        let idnps = info["idnps"].as_str().unwrap().to_string();
        let mut mine = summary("P3");
        mine.author = idnps.clone();
        let (c, v) = feed(&pro, mine, "SP3");
        assert_eq!(c, 200, "{v}");
        let mine_id = doc_of(&v);
        let mut next = summary("P3-2");
        next.author = idnps.clone();
        next.replaces = Some(mine_id.clone());
        next.set_extension = "P3-set".into();
        next.version = 2;
        let (c, v) = feed(&pro, next, "SP3-2");
        assert_eq!(c, 200, "{v}");
        let mut theirs = summary("P4");
        theirs.author = idnps.clone();
        theirs.replaces = Some(a.clone());
        let (c, v) = feed(&pro, theirs, "SP4");
        refused_json((c, v), "not-author");
        let (_, current_a) = read(&sys, &format!("DocumentReference/{a}"));
        assert_eq!(current_a["status"], "current", "{current_a}");
        let mut changed = current_a.clone();
        changed["description"] = json!("modifié");
        let write = |token: &str, method: &str, path: &str, body: Option<&Value>| -> (u16, Value) {
            let (c, v, _) = fhir(root, method, path, Some(token), body);
            (c, v)
        };
        // A colleague's document is not overwritten (checked again once the patient has deleted it).
        let colleague_overwrites = || {
            refused_json(
                write(
                    &pro,
                    "PUT",
                    &format!("DocumentReference/{a}"),
                    Some(&changed),
                ),
                "not-author",
            )
        };
        // Outside ITI-65 a user changes a document's description only: not its status, labels or type — not even
        // the producer (here the patient's own document), nor creates one.
        let (_, mut tampered) = read(&sys, &format!("DocumentReference/{own_id}"));
        tampered["status"] = json!("superseded");
        refused_json(
            write(
                &patient,
                "PUT",
                &format!("DocumentReference/{own_id}"),
                Some(&tampered),
            ),
            "dmp-by-iti65",
        );
        tampered["status"] = json!("current");
        tampered["securityLabel"] =
            json!([{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "BOGUS"}]}]);
        refused_json(
            write(
                &patient,
                "PUT",
                &format!("DocumentReference/{own_id}"),
                Some(&tampered),
            ),
            "dmp-by-iti65",
        );
        let mut fresh = tampered.clone();
        fresh.as_object_mut().unwrap().remove("id");
        refused_json(
            write(&pro, "POST", "DocumentReference", Some(&fresh)),
            "dmp-by-iti65",
        );
        colleague_overwrites();
        refused_json(
            write(&pro, "DELETE", &format!("DocumentReference/{a}"), None),
            "not-author",
        );
        // Nor is a document's content changed through its Binary.
        let bin_id = bin_a.rsplit('/').next().unwrap().to_string();
        let forged = json!({"resourceType": "Binary", "id": bin_id, "contentType": "text/plain", "data": "ZmF1eA=="});
        refused_json(
            write(&pro, "PUT", &format!("Binary/{bin_id}"), Some(&forged)),
            "document-content",
        );
        refused_json(
            write(&pro, "DELETE", &format!("Binary/{bin_id}"), None),
            "document-content",
        );
        assert_eq!(raw(&sys, &bin_a, None).0, 200, "contenu intact");
        // The patient: changes only their own documents, adds only in the patient categories; deletes a
        // professional's document of their record, never one hidden from them.
        refused_json(
            write(
                &patient,
                "PUT",
                &format!("DocumentReference/{a}"),
                Some(&changed),
            ),
            "not-author",
        );
        let (_, mut own_doc) = read(&patient, &format!("DocumentReference/{own_id}"));
        own_doc["description"] = json!("ma note");
        let (c, v) = write(
            &patient,
            "PUT",
            &format!("DocumentReference/{own_id}"),
            Some(&own_doc),
        );
        assert_eq!(c, 200, "{v}");
        // Retyped (even to a mix of codes) or created outside ITI-65: refused before the category rules apply.
        let mut retyped = own_doc.clone();
        retyped["type"] = current_a["type"].clone();
        refused_json(
            write(
                &patient,
                "PUT",
                &format!("DocumentReference/{own_id}"),
                Some(&retyped),
            ),
            "dmp-by-iti65",
        );
        // A patient category next to a professional type does not make a patient's document.
        let mut mixed = own_doc.clone();
        let mut codings = own_doc["type"]["coding"].as_array().unwrap().clone();
        codings.extend(
            current_a["type"]["coding"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        mixed["type"]["coding"] = json!(codings);
        refused_json(
            write(
                &patient,
                "PUT",
                &format!("DocumentReference/{own_id}"),
                Some(&mixed),
            ),
            "dmp-by-iti65",
        );
        let mut created = retyped.clone();
        created.as_object_mut().unwrap().remove("id");
        refused_json(
            write(&patient, "POST", "DocumentReference", Some(&created)),
            "dmp-by-iti65",
        );
        let mut hide = summary("H2");
        hide.labels = vec![(
            "urn:oid:1.2.250.1.213.1.1.4.13".into(),
            "INVISIBLE_PATIENT".into(),
        )];
        let (c, v) = feed(&sys, hide, "SH2");
        assert_eq!(c, 200, "{v}");
        let hidden_id = doc_of(&v);
        let located = |i: usize| {
            v["entry"][i]["response"]["location"]
                .as_str()
                .unwrap()
                .split("/_history")
                .next()
                .unwrap()
                .rsplit_once("/fhir/")
                .unwrap()
                .1
                .to_string()
        };
        let (hidden_list, hidden_binary) = (located(0), located(2));
        refused_json(
            write(
                &patient,
                "DELETE",
                &format!("DocumentReference/{hidden_id}"),
                None,
            ),
            "hidden-from-patient",
        );
        // Nor does its submission set betray it, nor the record's count of documents.
        let names_hidden = |token: &str| {
            let (c, v) = read(token, "List?patient=pd&_count=200");
            assert_eq!(c, 200, "{v}");
            v.to_string()
                .contains(&format!("DocumentReference/{hidden_id}"))
        };
        assert!(names_hidden(&sys) && !names_hidden(&patient));
        let count = |token: &str| {
            let (c, v) = read(token, "Patient/pd/$dmp");
            assert_eq!(c, 200, "{v}");
            v["parameter"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "documents")
                .and_then(|p| p["valueInteger"].as_i64())
                .unwrap()
        };
        assert_eq!(count(&patient), count(&sys) - 1);
        // Nor its submission set or its Binary, read directly or named in the patient's trail.
        for path in [&hidden_list, &hidden_binary] {
            let (c, v) = read(&patient, path);
            assert_eq!(c, 403, "{path} : {v}");
        }
        let (c, trail) = read(&patient, "AuditEvent?_count=1000");
        assert_eq!(c, 200, "{trail}");
        let text = trail.to_string();
        assert!(
            !text.contains(&hidden_list)
                && !text.contains(&hidden_binary)
                && !text.contains(&hidden_id),
            "{text}"
        );
        let (c, _) = read(&sys, &hidden_list);
        assert_eq!(c, 200);
        let (c, v) = write(
            &patient,
            "DELETE",
            &format!("DocumentReference/{mine_id}"),
            None,
        );
        assert!(c == 200 || c == 204, "{c} {v}");
        // A deleted document's past is told only to whom may read it.
        refused_json(
            read(
                &patient,
                &format!("DocumentReference/{hidden_id}/_history/9"),
            ),
            "hidden-from-patient",
        );
        refused_json(
            read(
                &patient,
                &format!("DocumentReference/{hidden_id}/_history?_count=0"),
            ),
            "hidden-from-patient",
        );
        assert_eq!(
            read(&patient, &format!("DocumentReference/{mine_id}")).0,
            410
        );
        // A colleague's deleted document is not brought back by writing it again.
        let (c, v) = write(&patient, "DELETE", &format!("DocumentReference/{a}"), None);
        assert!(c == 200 || c == 204, "{c} {v}");
        colleague_overwrites();
        let (c, _) = read(&patient, &format!("DocumentReference/{mine_id}/_history/9"));
        assert_eq!(c, 404);

        // The record: the patient reads its state and closes it; feeds are then refused.
        let (c, v) = read(&patient, "Patient/pd/$dmp");
        assert_eq!(c, 200, "{v}");
        let (c, v) = read(&patient, "Patient/other/$dmp");
        assert_eq!(c, 403, "{v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            "Patient/pd/$dmp-close",
            Some(&pro),
            Some(&json!({})),
        );
        assert_eq!(c, 403, "{v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            "Patient/pd/$dmp-close",
            Some(&patient),
            Some(&json!({})),
        );
        assert_eq!(c, 200, "{v}");
        let (c, v) = feed(&sys, SampleDoc::report("Z", 1_000), "SZ");
        assert_eq!(c, 409, "{v}");
        // Closed: its documents are out of professionals' reach — care relationship or break-glass — and kept
        // for the patient; reopened, they are back.
        let (c, v) = read(&pro, &format!("DocumentReference/{b}"));
        assert_eq!(c, 403, "{v}");
        assert!(v.to_string().contains("record-closed"), "{v}");
        refused(
            raw(&pro, &bin_b, Some("patient inconscient, urgences vitales")),
            "record-closed",
        );
        let (c, v) = read(&pro, "DocumentReference?patient=pd");
        assert_eq!(c, 200, "{v}");
        assert!(common::entry_ids(&v).is_empty(), "{v}");
        let (c, v) = read(&patient, "DocumentReference?patient=pd");
        assert_eq!(c, 200, "{v}");
        assert!(!common::entry_ids(&v).is_empty(), "{v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            "Patient/pd/$dmp-reopen",
            Some(&patient),
            Some(&json!({})),
        );
        assert_eq!(c, 200, "{v}");
        let (c, v) = read(&pro, &format!("DocumentReference/{b}"));
        assert_eq!(c, 200, "{v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            "Patient/pd/$dmp-close",
            Some(&patient),
            Some(&json!({})),
        );
        assert_eq!(c, 200, "{v}");
        printed(
            &st.s
                .cli(&["policy", "revoke", "--patient", "pd", "--id", &care]),
        );

        // The patient's trail: who read which document, why; the break-glass; the operations.
        let (c, trail, _) = fhir(
            root,
            "GET",
            "Patient/pd/$audit-trail?_count=200",
            Some(&patient),
            None,
        );
        assert_eq!(c, 200, "{trail}");
        let text = trail.to_string();
        for want in [
            "no-care-relationship",
            "document-masked",
            "hidden-from-patient",
            "break-glass",
            "dmp-announce",
            "dmp-mask",
            "dmp-closed",
        ] {
            assert!(text.contains(want), "{want} absent de la trace du patient");
        }
        // The refused feed (no care relationship) is there too, as a refused transaction with its reason.
        let refused_feed = trail["entry"].as_array().unwrap().iter().any(|e| {
            let ev = &e["resource"];
            ev["subtype"][0]["code"] == "transaction"
                && ev["outcomeDesc"] == "403"
                && ev.to_string().contains("no-care-relationship")
        });
        assert!(
            refused_feed,
            "alimentation refusée absente de la trace : {trail}"
        );
        // The same trail as a FHIR search of `AuditEvent` (the patient's own compartment only), by period too.
        let (c, search, _) = fhir(
            root,
            "GET",
            "AuditEvent?patient=Patient/pd&_count=1000",
            Some(&patient),
            None,
        );
        assert_eq!(c, 200, "{search}");
        let (found, listed) = (common::entry_ids(&search), common::entry_ids(&trail));
        assert!(listed.len() < 200, "{}", listed.len());
        // The search comes after the operation: the same records, and that reading of the trail itself.
        assert!(
            listed.iter().all(|id| found.contains(id)) && found.len() <= listed.len() + 1,
            "la recherche AuditEvent et $audit-trail diffèrent : {found:?} / {listed:?}"
        );
        let (c, own, _) = fhir(root, "GET", "AuditEvent?_count=5", Some(&patient), None);
        assert_eq!(c, 200, "{own}");
        assert_eq!(common::entry_ids(&own).len(), 5, "{own}");
        assert!(
            own.to_string()
                .contains("AuditEvent?patient=pd&_count=5&page="),
            "{own}"
        );
        let (c, none, _) = fhir(
            root,
            "GET",
            "AuditEvent?date=lt2000-01-01&_count=5",
            Some(&patient),
            None,
        );
        assert_eq!(c, 200, "{none}");
        assert!(common::entry_ids(&none).is_empty(), "{none}");
        let (c, v, _) = fhir(root, "GET", "AuditEvent?patient=p2", Some(&patient), None);
        assert_eq!(c, 403, "{v}");
        // The same through the compartment's path: their own trail, another's refused (also in strict mode).
        let (c, v, _) = fhir(root, "GET", "Patient/p2/AuditEvent", Some(&patient), None);
        assert_eq!(c, 403, "{v}");
        let r = ureq::get(&format!("{root}/fhir/Patient/pd/AuditEvent?_count=5"))
            .set("Authorization", &format!("Bearer {patient}"))
            .set("Prefer", "handling=strict")
            .call()
            .expect("own trail by the compartment's path");
        let v: Value = r.into_json().unwrap();
        assert!(!common::entry_ids(&v).is_empty(), "{v}");
        let (c, v, _) = fhir(root, "GET", "AuditEvent?date=hier", Some(&patient), None);
        assert_eq!(c, 400, "{v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            "AuditEvent",
            Some(&patient),
            Some(
                &json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
                         "agent": [{"requestor": true}], "source": {"observer": {"display": "moi"}},
                         "entity": [{"what": {"reference": "Patient/pd"}}]}),
            ),
        );
        assert_eq!(c, 403, "{v}");
        assert!(v.to_string().contains("audit-by-socle"), "{v}");
        // Once announced, the document, its Binary and its submission set are the patient's to read.
        let (c, v, _) = fhir(
            root,
            "POST",
            &format!("DocumentReference/{hidden_id}/$dmp-announce"),
            Some(&sys),
            Some(&json!({})),
        );
        assert_eq!(c, 200, "{v}");
        for path in [
            &format!("DocumentReference/{hidden_id}"),
            &hidden_list,
            &hidden_binary,
        ] {
            let (c, v, _) = fhir(root, "GET", path, Some(&patient), None);
            assert_eq!(c, 200, "{path} : {v}");
        }
    }
}

/// Answers the record-choice page of an account that represents other persons, if the provider shows one.
fn choose_record(b: &mut Browser, root: &str, p: Page, dossier: &str) -> Page {
    if p.status != 200 || !p.body.contains("name=\"dossier\"") {
        return p;
    }
    let mut fields = hidden(&p.body);
    fields.push(("dossier".into(), dossier.into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b.post(&format!("{root}{}", form_action(&p.body)), &f)
}

/// The claims of a JWT (not verified: the server verified it when it issued it).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn legal_representatives_act_for_the_persons_they_represent() {
    use socle_dmp::sample::{self, SampleDoc};
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let sys = system_token(&st, "DPI pédiatrique", "system/*.cruds");
        // The fixture's patient account is the parent; the registry's second person is the child, the third
        // someone else; both have local records, qualified.
        let mut g = socle_ins::generate::PersonGenerator::new(7);
        g.next_person();
        let child = g.next_person();
        let other = g.next_person();
        for (id, p) in [("enfant", &child), ("autre", &other)] {
            let (c, oo, _) = fhir(
                root,
                "PUT",
                &format!("Patient/{id}"),
                Some(&sys),
                Some(&local(
                    id,
                    &p.to_fhir(),
                    "QUAL",
                    &[
                        insi_date(),
                        json!({"url": "validationMode", "valueCoding": {"code": "CN"}}),
                    ],
                    Some(&p.matricule),
                )),
            );
            assert_eq!(c, 201, "{oo}");
        }
        let who = sample::Person {
            ins_oid: child.system.trim_start_matches("urn:oid:").into(),
            ins: child.matricule.clone(),
            family: child.family.clone(),
            given: child.given[0].clone(),
            gender: if child.gender == "male" { "M" } else { "F" }.into(),
            birth: child.birth_date.replace('-', ""),
        };
        let feed = |d: SampleDoc, sub: &str| -> String {
            let cda = sample::cda_n1(&who, &d);
            let (c, v, _) = fhir(
                root,
                "POST",
                "",
                Some(&sys),
                Some(&sample::provide_bundle("enfant", sub, &[(d, cda)])),
            );
            assert_eq!(c, 200, "{v}");
            common::created_id(&v["entry"][1])
        };
        let summary = |ext: &str, label: Option<&str>| {
            let mut d = SampleDoc::report(ext, 5_000);
            d.type_code = "34133-9".into();
            d.type_display = "Synthèse d'épisode de soins".into();
            if let Some(l) = label {
                d.labels = vec![("urn:oid:1.2.250.1.213.1.1.4.13".into(), l.into())];
            }
            d
        };
        let open = feed(summary("R1", None), "SR1");
        let secret = feed(summary("R2", Some("INVISIBLE_REPRESENTANTS_LEGAUX")), "SR2");
        let unannounced = feed(summary("R3", Some("INVISIBLE_PATIENT")), "SR3");

        // The operator records the representation; mistakes are named.
        let out = st.s.cli(&[
            "accounts",
            "add-representative",
            "--login",
            "000000000000000",
            "--ins",
            &child.matricule,
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("compte patient inconnu"));
        let stranger = g.next_person();
        let out = st.s.cli(&[
            "accounts",
            "add-representative",
            "--login",
            &st.ins,
            "--ins",
            &stranger.matricule,
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pas de dossier local"));
        let out = printed(&st.s.cli(&[
            "accounts",
            "add-representative",
            "--login",
            &st.ins,
            "--ins",
            &child.matricule,
        ]));
        assert!(out.contains("Patient/enfant"), "{out}");
        let out = printed(
            &st.s
                .cli(&["accounts", "representations", "--login", &st.ins]),
        );
        assert!(
            out.contains(&child.matricule) && out.contains("Patient/enfant"),
            "{out}"
        );

        // The parent logs in with an application; after the consent, they choose the record.
        let app = after(
            &printed(&st.s.cli(&[
                "clients",
                "register",
                "--realm",
                "patient",
                "--name",
                "Carnet de santé familial",
                "--redirect-uri",
                REDIRECT,
                "--auth-method",
                "none",
            ])),
            "client_id:",
        );
        let authorize = |verifier: &str| {
            format!(
                "{root}/auth/patient/authorize?response_type=code&client_id={app}&redirect_uri={REDIRECT}&scope=openid%20launch/patient%20offline_access%20patient/*.cruds&code_challenge={}&code_challenge_method=S256",
                socle_auth::pkce_challenge(verifier)
            )
        };
        let exchange = |code: &str, verifier: &str| {
            token_post(
                root,
                "patient",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("client_id", &app),
                    ("code_verifier", verifier),
                ],
                None,
            )
        };
        let mut b = Browser::new();
        let v1 = socle_auth::random_token(32);
        let p = login(
            &mut b,
            root,
            &authorize(&v1),
            &st.ins,
            PASSWORD,
            Some((&st.patient_totp, now_step())),
        );
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(p.body.contains("Mon propre dossier"), "{}", p.body);
        assert!(p.body.contains(&child.family), "{}", p.body);
        // A forged choice (a person not represented) is refused.
        let forged = choose_record(&mut b, root, p, "autre");
        assert_eq!(forged.status, 400, "{}", forged.body);
        assert!(forged.body.contains("ne représente pas"), "{}", forged.body);
        // The session stays: the next authorization goes straight to the choice.
        let v2 = socle_auth::random_token(32);
        let p = b.get(&authorize(&v2));
        assert!(p.body.contains("name=\"dossier\""), "{}", p.body);
        let p = choose_record(&mut b, root, p, "enfant");
        assert_eq!(p.status, 303, "{}", p.body);
        let code = query_of(p.location.as_deref().unwrap())["code"].clone();
        let (c, t) = exchange(&code, &v2);
        assert_eq!(c, 200, "{t}");
        assert_eq!(t["patient"], "enfant");
        let rep = t["access_token"].as_str().unwrap().to_string();
        let refresh = t["refresh_token"].as_str().unwrap().to_string();
        let claims = jwt_claims(&rep);
        assert_eq!(claims["representative"], true);
        assert_eq!(claims["patient"], "enfant");
        assert_eq!(claims["represented_ins"], child.matricule.as_str());
        assert_eq!(claims["sub"], st.ins.as_str());

        // The representative reads the child's record, except what is hidden from representatives (and what is
        // not yet announced); never another person's.
        let (c, v, _) = fhir(
            root,
            "GET",
            &format!("DocumentReference/{open}"),
            Some(&rep),
            None,
        );
        assert_eq!(c, 200, "{v}");
        for (doc, code) in [
            (&secret, "hidden-from-representative"),
            (&unannounced, "hidden-from-representative"),
        ] {
            let (c, v, _) = fhir(
                root,
                "GET",
                &format!("DocumentReference/{doc}"),
                Some(&rep),
                None,
            );
            assert_eq!(c, 403, "{v}");
            assert!(v.to_string().contains(code), "{v}");
        }
        let (c, v, _) = fhir(
            root,
            "GET",
            "DocumentReference?patient=enfant",
            Some(&rep),
            None,
        );
        assert_eq!(c, 200, "{v}");
        assert_eq!(common::entry_ids(&v), vec![open.clone()], "{v}");
        let (c, v, _) = fhir(root, "GET", "Patient/autre", Some(&rep), None);
        assert_eq!(c, 403, "{v}");

        // They manage the child's rules, but not the visibility of documents for representatives, and do not
        // see the rules about what is hidden from them.
        let rule = |kind: &str, target: &str| {
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "kind", "valueCode": kind},
                {"name": "target", "valueString": target}]})
        };
        let (c, v, _) = fhir(
            root,
            "POST",
            "Patient/enfant/$policy-rules",
            Some(&rep),
            Some(&rule(
                "hide-representative",
                &format!("DocumentReference/{open}"),
            )),
        );
        assert_eq!(c, 403, "{v}");
        let (c, v, _) = fhir(
            root,
            "POST",
            "Patient/enfant/$policy-rules",
            Some(&rep),
            Some(&rule("mask", &format!("DocumentReference/{open}"))),
        );
        assert_eq!(c, 201, "{v}");
        let (c, v, _) = fhir(
            root,
            "GET",
            "Patient/enfant/$policy-rules",
            Some(&rep),
            None,
        );
        assert_eq!(c, 200, "{v}");
        let text = v.to_string();
        assert!(text.contains("\"mask\""), "{v}");
        assert!(
            !text.contains("hide-representative")
                && !text.contains(&secret)
                && !text.contains(&unannounced),
            "{v}"
        );
        let (c, v, _) = fhir(root, "GET", "Patient/autre/$policy-rules", Some(&rep), None);
        assert_eq!(c, 403, "{v}");

        // The child's trail names the representative as such, and says nothing of the hidden documents.
        let (c, v, _) = fhir(
            root,
            "GET",
            "Patient/enfant/$audit-trail?_count=1000",
            Some(&rep),
            None,
        );
        assert_eq!(c, 200, "{v}");
        let text = v.to_string();
        assert!(text.contains(&format!("representative:{}", st.ins)), "{v}");
        assert!(text.contains(&format!("DocumentReference/{open}")), "{v}");
        assert!(
            !text.contains(&secret) && !text.contains(&unannounced),
            "{v}"
        );
        let (c, v, _) = fhir(root, "GET", "AuditEvent?_count=1000", Some(&rep), None);
        assert_eq!(c, 200, "{v}");
        let text = v.to_string();
        assert!(text.contains(&format!("DocumentReference/{open}")), "{v}");
        assert!(
            !text.contains(&secret) && !text.contains(&unannounced),
            "{v}"
        );
        // The structure's software still sees the whole trail.
        let (c, v, _) = fhir(
            root,
            "GET",
            "Patient/enfant/$audit-trail?_count=1000",
            Some(&sys),
            None,
        );
        assert_eq!(c, 200, "{v}");
        assert!(v.to_string().contains(&secret), "{v}");

        // The parent's own record, chosen another time: no representation in the token.
        let v3 = socle_auth::random_token(32);
        let p = b.get(&authorize(&v3));
        let p = choose_record(&mut b, root, p, "self");
        assert_eq!(p.status, 303, "{}", p.body);
        let (c, t) = exchange(&query_of(p.location.as_deref().unwrap())["code"], &v3);
        assert_eq!(c, 200, "{t}");
        let own = jwt_claims(t["access_token"].as_str().unwrap());
        assert!(own.get("representative").is_none(), "{own}");
        assert_ne!(own["patient"], "enfant");

        // The representation ends: its refresh token stops working at once, its access tokens as soon as the
        // server has read the revocation the command recorded (every 5 s).
        printed(&st.s.cli(&[
            "accounts",
            "remove-representative",
            "--login",
            &st.ins,
            "--ins",
            &child.matricule,
        ]));
        let (c, v) = token_post(
            root,
            "patient",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &app),
            ],
            None,
        );
        assert_eq!(c, 400, "{v}");
        assert_eq!(v["error"], "invalid_grant", "{v}");
        let start = std::time::Instant::now();
        loop {
            let (c, v, _) = fhir(
                root,
                "GET",
                &format!("DocumentReference/{open}"),
                Some(&rep),
                None,
            );
            if c == 401 {
                break;
            }
            assert_eq!(c, 200, "{v}");
            assert!(start.elapsed().as_secs() < 12, "jeton toujours accepté");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        // And the choice is no longer offered.
        let v4 = socle_auth::random_token(32);
        let p = b.get(&authorize(&v4));
        assert_eq!(p.status, 303, "{}", p.body);
        let out = st.s.cli(&[
            "accounts",
            "remove-representative",
            "--login",
            &st.ins,
            "--ins",
            &child.matricule,
        ]);
        assert!(!out.status.success());
    }
}

/// The matrix profession × document type, end to end: a professional who is not a physician (the matrix gives
/// physicians every type), with a care relationship, reads a care summary but not a document type the matrix
/// keeps from their profession.
#[test]
fn the_matrix_refuses_a_profession_a_document_type() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let sys = system_token(&st, "Logiciel d'établissement", "system/*.cruds");
        let (c, list, _) = fhir(root, "GET", "Practitioner?_count=100", Some(&sys), None);
        assert_eq!(c, 200, "{list}");
        let matrix = socle_policy::Matrix::default_matrix();
        let (rpps, profession) = list["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find_map(|p| {
                let prof = p["qualification"][0]["code"]["coding"][0]["code"].as_str()?;
                (!matrix.allows(&[prof.to_string()], "34874-8")).then(|| {
                    let rpps = p["identifier"]
                        .as_array()?
                        .iter()
                        .find(|i| i["system"] == "https://rpps.esante.gouv.fr")?["value"]
                        .as_str()?
                        .to_string();
                    (rpps != st.rpps).then(|| (rpps, prof.to_string()))
                })?
            })
            .expect("un professionnel non médecin parmi ceux générés, autre que celui du montage");
        let totp = common::pro_account(&st.s, &rpps);
        let verifier = socle_auth::random_token(32);
        let url = format!(
            "{root}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid%20user/*.rs&code_challenge={}&code_challenge_method=S256",
            st.app,
            socle_auth::pkce_challenge(&verifier)
        );
        let p = login(
            &mut Browser::new(),
            root,
            &url,
            &rpps,
            PASSWORD,
            Some((&totp, now_step())),
        );
        assert_eq!(p.status, 303, "{}", p.body);
        let code = query_of(p.location.as_deref().unwrap())["code"].clone();
        let (c, t) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        assert_eq!(c, 200, "{t}");
        let pro = t["access_token"].as_str().unwrap().to_string();
        assert_eq!(jwt_claims(&pro)["profession"], json!([profession]));

        for (path, body) in [
            (
                "Patient/pm",
                json!({"resourceType": "Patient", "id": "pm", "name": [{"family": "MATRICE"}]}),
            ),
            (
                "DocumentReference/cr-op",
                json!({"resourceType": "DocumentReference", "id": "cr-op", "status": "current",
                       "type": {"coding": [{"system": "http://loinc.org", "code": "34874-8"}]},
                       "subject": {"reference": "Patient/pm"},
                       "content": [{"attachment": {"contentType": "application/pdf"}}]}),
            ),
            (
                "DocumentReference/synthese",
                json!({"resourceType": "DocumentReference", "id": "synthese", "status": "current",
                       "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9"}]},
                       "subject": {"reference": "Patient/pm"},
                       "content": [{"attachment": {"contentType": "application/pdf"}}]}),
            ),
        ] {
            let (c, oo, _) = fhir(root, "PUT", path, Some(&sys), Some(&body));
            assert_eq!(c, 201, "{path} : {oo}");
        }
        printed(&st.s.cli(&[
            "policy",
            "add-rule",
            "--patient",
            "pm",
            "--kind",
            "care",
            "--professional",
            &rpps,
            "--detail",
            "equipe-de-soins",
        ]));
        let (c, v, _) = fhir(root, "GET", "DocumentReference/synthese", Some(&pro), None);
        assert_eq!(c, 200, "{v}");
        let (c, v, _) = fhir(root, "GET", "DocumentReference/cr-op", Some(&pro), None);
        assert_eq!(c, 403, "{v}");
        assert!(v.to_string().contains("matrix-denied"), "{v}");
        // In a search, the refused type is left out.
        let (c, v, _) = fhir(
            root,
            "GET",
            "DocumentReference?patient=pm",
            Some(&pro),
            None,
        );
        assert_eq!(c, 200, "{v}");
        assert_eq!(common::entry_ids(&v), ["synthese"], "{v}");
    }
}

/// A professional's claims follow the Annuaire: a change of profession reaches the next token; once the
/// Practitioner is inactive (struck off), refreshing and logging in are refused.
#[test]
fn professionals_claims_follow_the_annuaire() {
    for backend in backends() {
        let st = AuthFixture::new(&backend);
        let root = st.root.as_str();
        let sys = system_token(&st, "Gestion de l'Annuaire", "system/*.cruds");
        let mut b = Browser::new();
        let (code, verifier) = code_for(&mut b, &st, "openid offline_access user/*.rs", now_step());
        let (c, t) = token_post(
            root,
            "pro",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &st.app),
                ("code_verifier", &verifier),
            ],
            None,
        );
        assert_eq!(c, 200, "{t}");
        let before = jwt_claims(t["access_token"].as_str().unwrap())["profession"].clone();
        let idnps = format!("8{}", st.rpps);
        let (c, roles, _) = fhir(
            root,
            "GET",
            &format!("PractitionerRole?practitioner=Practitioner/{idnps}"),
            Some(&sys),
            None,
        );
        assert_eq!(c, 200, "{roles}");
        let new_profession = if before == json!(["60"]) { "21" } else { "60" };
        for e in roles["entry"].as_array().unwrap() {
            let mut role = e["resource"].clone();
            role["code"][0]["coding"][0]["code"] = json!(new_profession);
            let id = role["id"].as_str().unwrap().to_string();
            let (c, oo, _) = fhir(
                root,
                "PUT",
                &format!("PractitionerRole/{id}"),
                Some(&sys),
                Some(&role),
            );
            assert_eq!(c, 200, "{oo}");
        }
        let refresh = |rt: &str| {
            token_post(
                root,
                "pro",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                    ("client_id", &st.app),
                ],
                None,
            )
        };
        let (c, t2) = refresh(t["refresh_token"].as_str().unwrap());
        assert_eq!(c, 200, "{t2}");
        assert_eq!(
            jwt_claims(t2["access_token"].as_str().unwrap())["profession"],
            json!([new_profession]),
            "avant : {before}"
        );
        // Struck off: the Practitioner made inactive.
        let (c, mut pr, _) = fhir(
            root,
            "GET",
            &format!("Practitioner/{idnps}"),
            Some(&sys),
            None,
        );
        assert_eq!(c, 200, "{pr}");
        pr["active"] = json!(false);
        let (c, oo, _) = fhir(
            root,
            "PUT",
            &format!("Practitioner/{idnps}"),
            Some(&sys),
            Some(&pr),
        );
        assert_eq!(c, 200, "{oo}");
        let (c, e) = refresh(t2["refresh_token"].as_str().unwrap());
        assert_eq!(
            (c, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        assert!(e.to_string().contains("Annuaire"), "{e}");
        let verifier = socle_auth::random_token(32);
        let url = format!(
            "{root}/auth/pro/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid&code_challenge={}&code_challenge_method=S256&prompt=login",
            st.app,
            socle_auth::pkce_challenge(&verifier)
        );
        let p = login(
            &mut Browser::new(),
            root,
            &url,
            &st.rpps,
            PASSWORD,
            Some((&st.totp, now_step() + 1)),
        );
        assert_eq!(p.status, 403, "{}", p.body);
        assert!(p.body.contains("Annuaire"), "{}", p.body);
    }
}
