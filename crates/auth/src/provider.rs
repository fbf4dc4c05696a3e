//! The OpenID Connect provider: accounts and their login (password, TOTP, lockout), clients and their
//! authentication, the authorization-code flow with PKCE, refresh-token rotation, client credentials, access
//! and ID tokens, introspection, revocation, sessions and logout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};

use serde_json::{Map, Value, json};
use socle_store::Store;
use socle_store::sql::Row;

mod representation;
pub use representation::Represented;

use crate::jose::{Alg, Jws, PublicJwk};
use crate::keys::KeyRing;
use crate::scopes::{Scope, Scopes};
use crate::{
    ACR_ONE_FACTOR, ACR_TWO_FACTORS, AuthError, Network, Realm, acr_rank, now_ms, password,
    pkce_challenge, random_bytes, random_token, tables, token_hash, totp,
};

/// Lifetimes and network settings.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `http://host:port` as clients reach Socle: issuers are `{public_url}/auth/{realm}` and the access
    /// tokens' audience is `{public_url}/fhir`.
    pub public_url: String,
    pub access_ttl_s: i64,
    pub id_ttl_s: i64,
    pub code_ttl_s: i64,
    pub refresh_ttl_s: i64,
    pub session_ttl_s: i64,
    /// Establishment networks: professionals logging in from them may do so with a password alone.
    pub trusted_networks: Vec<Network>,
    /// Consecutive failed logins before the account is locked; each further failure doubles the lock.
    pub lockout_threshold: i64,
    pub lockout_base_s: i64,
    pub lockout_max_s: i64,
    /// Clients may authenticate with a TLS certificate (RFC 8705): the server requests client certificates.
    pub mtls: bool,
    /// The key that seals private signing keys and TOTP seeds in the database ([`crate::seal`]); without one
    /// they are stored in plain text (tests, tools).
    pub secrets: Option<Arc<crate::seal::Sealer>>,
}

impl ProviderConfig {
    pub fn new(public_url: &str) -> ProviderConfig {
        ProviderConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            access_ttl_s: 600,
            id_ttl_s: 600,
            code_ttl_s: 60,
            refresh_ttl_s: 30 * 24 * 3600,
            session_ttl_s: 8 * 3600,
            trusted_networks: Vec::new(),
            lockout_threshold: 5,
            lockout_base_s: 60,
            lockout_max_s: 3600,
            mtls: false,
            secrets: None,
        }
    }
}

/// Why a token request failed: the OAuth 2.0 error code (RFC 6749 §5.2) and a description in French.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} : {description}")]
pub struct TokenError {
    pub code: &'static str,
    pub description: String,
}

impl TokenError {
    fn new(code: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            code,
            description: description.into(),
        }
    }

    /// The HTTP status of this error on the token endpoint.
    pub fn status(&self) -> u16 {
        match self.code {
            "invalid_client" => 401,
            "server_error" => 500,
            "temporarily_unavailable" => 503,
            _ => 400,
        }
    }
}

impl From<AuthError> for TokenError {
    fn from(e: AuthError) -> Self {
        tracing::error!(error = %e, "erreur du fournisseur d'identité");
        TokenError::new("server_error", "erreur interne")
    }
}

impl From<socle_store::StoreError> for TokenError {
    fn from(e: socle_store::StoreError) -> Self {
        TokenError::from(AuthError::Store(e))
    }
}

/// An authorization request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Unknown client or unregistered redirect URI: shown to the user, never redirected (RFC 6749 §4.1.2.1).
    Display(String),
    /// Returned to the client at its (verified) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// A validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub realm: Realm,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    /// The minimum `acr` asked for (`acr_values`), if any.
    pub acr_values: Option<String>,
    /// `prompt=login`: authenticate again even with a session.
    pub force_login: bool,
}

impl AuthorizeRequest {
    pub fn to_json(&self) -> Value {
        json!({
            "client_id": self.client_id, "client_name": self.client_name, "redirect_uri": self.redirect_uri,
            "scope": self.scope, "state": self.state, "nonce": self.nonce,
            "code_challenge": self.code_challenge, "acr_values": self.acr_values, "force_login": self.force_login,
        })
    }

    fn from_json(realm: Realm, v: &Value) -> Option<AuthorizeRequest> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(AuthorizeRequest {
            realm,
            client_id: s("client_id")?,
            client_name: s("client_name")?,
            redirect_uri: s("redirect_uri")?,
            scope: s("scope")?,
            state: s("state"),
            nonce: s("nonce"),
            code_challenge: s("code_challenge")?,
            acr_values: s("acr_values"),
            force_login: v
                .get("force_login")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// The redirect carrying an error for this request.
    pub fn error(&self, error: &'static str, description: impl Into<String>) -> AuthorizeError {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
            error,
            description: description.into(),
        }
    }
}

/// A successful authentication of a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResult {
    pub realm: Realm,
    pub subject: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub auth_time: i64,
    /// The browser session it opened.
    pub sid: String,
}

/// The outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    Done(AuthResult),
    /// A TOTP code is needed: `pending` identifies the half-done login (one use, short-lived).
    NeedTotp {
        pending: String,
    },
}

/// Why a login failed (shown to the person in French; never says whether the login exists).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("identifiant ou mot de passe incorrect")]
    BadCredentials,
    #[error("code à usage unique incorrect ou déjà utilisé")]
    BadTotp,
    #[error("trop d'échecs : compte verrouillé pendant encore {0} secondes")]
    Locked(i64),
    #[error("la connexion a expiré : recommencez")]
    Expired,
    #[error("{0}")]
    Refused(String),
}

/// How a client authenticated at the token, introspection or revocation endpoint.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// From `Authorization: Basic`.
    pub basic: Option<(String, String)>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
    /// The certificate the client presented in the TLS handshake, if any.
    pub certificate: Option<crate::mtls::ClientCertificate>,
}

impl ClientAuth {
    /// Reads the client authentication fields of a form (the `Basic` header is set by the caller).
    pub fn from_form(form: &[(String, String)], basic: Option<(String, String)>) -> ClientAuth {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        ClientAuth {
            basic,
            client_id: get("client_id"),
            client_secret: get("client_secret"),
            assertion_type: get("client_assertion_type"),
            assertion: get("client_assertion"),
            certificate: None,
        }
    }
}

/// A client registration request.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub realm: Realm,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
    /// `client_secret_basic` (also accepts `client_secret_post`), `private_key_jwt`, `tls_client_auth`,
    /// `self_signed_tls_client_auth` or `none` (public).
    pub auth_method: String,
    /// For `private_key_jwt`: the client's public keys (a JWKS).
    pub jwks: Option<Value>,
    /// For `tls_client_auth`: the distinguished name its certificates carry (RFC 4514 text).
    pub tls_subject: Option<String>,
    /// For `self_signed_tls_client_auth`: the `x5t#S256` thumbprints of its certificates.
    pub tls_thumbprints: Vec<String>,
    /// The scopes it may ask for; `None`: the realm's defaults.
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub realm: Realm,
    pub name: String,
    pub auth_method: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
    pub scope: String,
    /// Only when just created with a secret.
    pub secret: Option<String>,
    /// The thumbprint of the certificate this client authenticated with (mTLS): tokens issued are bound to it.
    pub certificate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub realm: Realm,
    pub login: String,
    pub subject: String,
    pub status: String,
    /// The TOTP secret (base32) and its `otpauth://` URI, when just enrolled.
    pub totp: Option<(String, String)>,
    /// The one-time activation code, when just created without a password.
    pub activation_code: Option<String>,
}

/// Who a valid access token speaks for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for a client acting on its own behalf (client credentials).
    pub realm: Option<Realm>,
    pub subject: String,
    pub client_id: String,
    pub scopes: Scopes,
    pub acr: Option<String>,
    pub jti: String,
    pub expires: i64,
    /// The token's claims (profile claims included: `idnps`, `rpps`, `structures`, `ins`, `patient`…).
    pub claims: Map<String, Value>,
}

impl Principal {
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The thumbprint of the client certificate the token is bound to, if any (RFC 8705 `cnf.x5t#S256`).
    pub fn certificate_binding(&self) -> Option<&str> {
        self.claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str)
    }
}

/// The claims about the person's civil identity that introspection keeps for the token's own application.
const IDENTITY_CLAIMS: &[&str] = &[
    "given_name",
    "family_name",
    "name",
    "birthdate",
    "ins",
    "ins_system",
    "represented_ins",
];

/// The scopes a client gets when registered without `--scope`.
fn default_scope(realm: Realm, interactive: bool) -> &'static str {
    match (realm, interactive) {
        (Realm::Pro, true) => "openid profile fhirUser offline_access online_access user/*.cruds",
        (Realm::Patient, true) => {
            "openid profile fhirUser offline_access online_access launch/patient patient/*.cruds"
        }
        (_, false) => "system/*.rs",
    }
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub struct Provider {
    store: Arc<dyn Store>,
    keys: KeyRing,
    config: ProviderConfig,
    /// Revoked grants (`g:` + grant id) and access tokens (`j:` + jti), with their expiry: checked on every
    /// request without touching the database; reloaded from it every few seconds (revocations made by other
    /// nodes or by the CLI apply within that delay).
    revoked: RwLock<HashMap<String, i64>>,
    /// Access tokens already verified (see [`Provider::validate`]).
    verified: RwLock<HashMap<String, Arc<Principal>>>,
    /// Where professionals' profiles come from at each login and each token ([`Provider::set_pro_profiles`]).
    pro_profiles: RwLock<Option<ProfileSource>>,
}

/// A professional's current profile (claims) by login (RPPS): `Ok(None)` when they are no longer in the directory
/// or no longer active — they are then refused; `Err` when the directory cannot answer (the stored profile
/// serves).
pub type ProfileSource = Arc<dyn Fn(&str) -> Result<Option<Value>, String> + Send + Sync>;

const VERIFIED_CAP: usize = 100_000;

fn text(r: &Row, i: usize) -> String {
    r.get(i)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn opt_text(r: &Row, i: usize) -> Option<String> {
    r.get(i).and_then(|v| v.as_str()).map(str::to_string)
}

fn int(r: &Row, i: usize) -> i64 {
    r.get(i).and_then(|v| v.as_i64()).unwrap_or(0)
}

fn json_list(v: &[String]) -> String {
    Value::from(v.to_vec()).to_string()
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(s).unwrap_or_default()
}

fn form_get<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A parameter given twice is refused (RFC 6749 §3.1, §3.2).
fn single<'a>(form: &'a [(String, String)], k: &str) -> Result<Option<&'a str>, String> {
    let mut it = form.iter().filter(|(n, _)| n == k);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(format!("paramètre « {k} » répété"));
    }
    Ok(first)
}

/// Where an account's TOTP seed is stored (the sealed value's additional data).
fn seed_place(realm: Realm, login: &str) -> String {
    format!("totp/{}/{login}", realm.as_str())
}

/// Seals the TOTP seeds stored in plain text (accounts enrolled before the provider had a secrets key).
fn seal_plain_totp(
    store: &dyn Store,
    sealer: Option<&crate::seal::Sealer>,
) -> Result<(), AuthError> {
    let Some(sealer) = sealer else {
        return Ok(());
    };
    loop {
        let mut plain = Vec::new();
        store.read(&mut |c| {
            plain = c.query(
                "SELECT realm, login, totp_secret FROM auth_accounts WHERE totp_secret IS NOT NULL \
                 AND totp_secret NOT LIKE 'sealed1:%' LIMIT 1000",
                &[],
            )?;
            Ok(())
        })?;
        if plain.is_empty() {
            return Ok(());
        }
        let mut sealed = Vec::with_capacity(plain.len());
        for r in &plain {
            let (realm, login, seed) = (text(r, 0), text(r, 1), text(r, 2));
            let place = format!("totp/{realm}/{login}");
            sealed.push((sealer.seal(&place, seed.as_bytes())?, realm, login, seed));
        }
        store.write(&mut |c| {
            for (s, realm, login, seed) in &sealed {
                c.execute(
                    "UPDATE auth_accounts SET totp_secret = ? WHERE realm = ? AND login = ? AND totp_secret = ?",
                    &[
                        s.as_str().into(),
                        realm.as_str().into(),
                        login.as_str().into(),
                        seed.as_str().into(),
                    ],
                )?;
            }
            Ok(())
        })?;
    }
}

impl Provider {
    /// An account's TOTP seed as stored: base32, sealed when the provider has a secrets key.
    fn conceal_seed(&self, realm: Realm, login: &str, seed: &[u8]) -> Result<String, AuthError> {
        crate::seal::conceal(
            self.config.secrets.as_deref(),
            &seed_place(realm, login),
            &totp::base32(seed),
        )
    }

    /// An account's TOTP seed from its stored form (an unreadable one is a database error: the login fails).
    fn reveal_seed(
        &self,
        realm: Realm,
        login: &str,
        stored: &str,
    ) -> Result<Vec<u8>, socle_store::StoreError> {
        crate::seal::reveal(
            self.config.secrets.as_deref(),
            &seed_place(realm, login),
            stored,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "graine TOTP illisible");
            socle_store::StoreError::Corrupt(e.to_string())
        })
        .map(|s| totp::unbase32(&s).unwrap_or_default())
    }

    /// Opens the provider on `store` (creating its tables) and starts the thread that keeps the revocation list
    /// in step with the database.
    pub fn open(store: Arc<dyn Store>, config: ProviderConfig) -> Result<Arc<Provider>, AuthError> {
        tables::create(store.as_ref())?;
        // The first start with a secrets key seals what an earlier version stored in plain text, once.
        let migrate = config.secrets.is_some() && !crate::seal::migrated(store.as_ref())?;
        let keys = KeyRing::open_with(store.clone(), config.secrets.clone(), migrate)?;
        if migrate {
            seal_plain_totp(store.as_ref(), config.secrets.as_deref())?;
            crate::seal::mark_migrated(store.as_ref())?;
        }
        let p = Arc::new(Provider {
            store,
            keys,
            config,
            revoked: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
            pro_profiles: RwLock::new(None),
        });
        p.reload_revocations()?;
        let weak: Weak<Provider> = Arc::downgrade(&p);
        std::thread::Builder::new()
            .name("socle-auth-revocations".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    let Some(p) = weak.upgrade() else { break };
                    // Revocations and key rotations made by other nodes or by the CLI apply within 5 s.
                    if let Err(e) = p.reload_revocations().and_then(|_| p.keys.reload()) {
                        tracing::warn!(error = %e, "relecture des révocations et des clés impossible");
                    }
                }
            })
            .map_err(|e| AuthError::Internal(format!("thread des révocations : {e}")))?;
        Ok(p)
    }

    /// Reads professionals' profiles from `source` (the Annuaire) at each login and each token issued to them,
    /// instead of the copy taken when the account was created: a change of profession or of practice reaches the
    /// claims at the next token, and a professional struck off the directory (or made inactive) can no longer log
    /// in or refresh.
    pub fn set_pro_profiles(&self, source: ProfileSource) {
        *self.pro_profiles.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Brings the stored profile of a professional's account up to date from the directory; `Err` with the
    /// reason when they are no longer there.
    fn refresh_profile(&self, realm: Realm, login: &str) -> Result<(), String> {
        if realm != Realm::Pro {
            return Ok(());
        }
        let source = self
            .pro_profiles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(source) = source else {
            return Ok(());
        };
        match source(login) {
            Ok(Some(profile)) => {
                let json = profile.to_string();
                // Written only when it changed: most tokens find the same profile.
                let mut stored = None;
                if self
                    .store
                    .read(&mut |c| {
                        stored = c.query_one(
                            "SELECT profile FROM auth_accounts WHERE realm = ? AND login = ?",
                            &[realm.as_str().into(), login.into()],
                        )?;
                        Ok(())
                    })
                    .is_ok()
                    && stored.is_some_and(|r| text(&r, 0) == json)
                {
                    return Ok(());
                }
                if let Err(e) = self.store.write(&mut |c| {
                    c.execute(
                        "UPDATE auth_accounts SET profile = ? WHERE realm = ? AND login = ?",
                        &[json.as_str().into(), realm.as_str().into(), login.into()],
                    )?;
                    Ok(())
                }) {
                    tracing::warn!(error = %e, "profil professionnel non mis à jour");
                }
                Ok(())
            }
            Ok(None) => Err(
                "ce professionnel n'est plus inscrit comme actif à l'Annuaire Santé : connexion refusée".into(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "Annuaire injoignable : profil enregistré utilisé");
                Ok(())
            }
        }
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn issuer(&self, realm: Realm) -> String {
        format!("{}/auth/{}", self.config.public_url, realm.as_str())
    }

    /// The audience of access tokens: the FHIR API.
    pub fn audience(&self) -> String {
        format!("{}/fhir", self.config.public_url)
    }

    pub fn realm_of_issuer(&self, iss: &str) -> Option<Realm> {
        Realm::all().into_iter().find(|r| self.issuer(*r) == iss)
    }

    fn reload_revocations(&self) -> Result<(), AuthError> {
        let now = now_ms();
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                "SELECT id, expires FROM auth_revoked WHERE expires > ?",
                &[now.into()],
            )?;
            Ok(())
        })?;
        let map: HashMap<String, i64> = rows.iter().map(|r| (text(r, 0), int(r, 1))).collect();
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Records revocations (`g:grant` / `j:jti`) durably and in memory.
    fn revoke_ids(&self, ids: &[(String, i64)]) -> Result<(), AuthError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.store.write(&mut |c| {
            for (id, exp) in ids {
                c.execute(
                    "INSERT INTO auth_revoked (id, kind, expires) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    &[
                        id.as_str().into(),
                        id.get(..1).unwrap_or("?").into(),
                        (*exp).into(),
                    ],
                )?;
            }
            c.execute("DELETE FROM auth_revoked WHERE expires < ?", &[now_ms().into()])?;
            Ok(())
        })?;
        let mut m = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        for (id, exp) in ids {
            m.insert(id.clone(), *exp);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ accounts

    /// Creates an account. `profile` holds the claims tokens carry about the person (for a professional:
    /// `rpps`, `idnps`, names, `profession`, `specialty`, `structures`; for a patient: `ins`, names, `patient`).
    /// Without a password the account is pending and an activation code is returned. With `totp`, a TOTP
    /// secret is enrolled and returned.
    pub fn create_account(
        &self,
        realm: Realm,
        login: &str,
        subject: &str,
        password: Option<&str>,
        totp: bool,
        profile: &Value,
    ) -> Result<AccountInfo, AuthError> {
        if login.is_empty() || login.len() > 128 || login.chars().any(char::is_whitespace) {
            return Err(AuthError::Invalid(format!(
                "identifiant de connexion invalide : « {login} »"
            )));
        }
        let hash = match password {
            Some(p) => {
                password::check_policy(p)?;
                Some(password::hash(p)?)
            }
            None => None,
        };
        let secret = totp.then(|| random_bytes(20));
        let activation = password.is_none().then(|| {
            // Eight groups of digits are easy to read out on the phone or to print on a letter.
            let b = random_bytes(8);
            let n = u64::from_be_bytes(b.try_into().unwrap_or([0; 8])) % 10u64.pow(12);
            let s = format!("{n:012}");
            format!("{}-{}-{}", &s[0..4], &s[4..8], &s[8..12])
        });
        let now = now_ms();
        let status = if password.is_some() {
            "active"
        } else {
            "pending"
        };
        let sealed_seed = match &secret {
            Some(s) => Some(self.conceal_seed(realm, login, s)?),
            None => None,
        };
        let mut conflict = false;
        self.store.write(&mut |c| {
            conflict = false;
            let exists = c.query_one(
                "SELECT 1 FROM auth_accounts WHERE realm = ? AND (login = ? OR subject = ?)",
                &[realm.as_str().into(), login.into(), subject.into()],
            )?;
            if exists.is_some() {
                conflict = true;
                return Ok(());
            }
            c.execute(
                "INSERT INTO auth_accounts (realm, login, subject, password_hash, totp_secret, totp_last_step, \
                 failures, locked_until, activation_hash, activation_expires, status, profile, created) \
                 VALUES (?, ?, ?, ?, ?, NULL, 0, 0, ?, ?, ?, ?, ?)",
                &[
                    realm.as_str().into(),
                    login.into(),
                    subject.into(),
                    hash.clone().into(),
                    sealed_seed.clone().into(),
                    activation.as_deref().map(token_hash).into(),
                    activation.as_ref().map(|_| now + 30 * 24 * 3600 * 1000).into(),
                    status.into(),
                    profile.to_string().into(),
                    now.into(),
                ],
            )?;
            Ok(())
        })?;
        if conflict {
            return Err(AuthError::Conflict(format!(
                "un compte existe déjà pour « {login} » dans le domaine {}",
                realm.as_str()
            )));
        }
        let issuer = if realm == Realm::Pro {
            "Socle Pro"
        } else {
            "Socle Patient"
        };
        Ok(AccountInfo {
            realm,
            login: login.to_string(),
            subject: subject.to_string(),
            status: status.into(),
            totp: secret.map(|s| (totp::base32(&s), totp::otpauth_uri(issuer, login, &s))),
            activation_code: activation,
        })
    }

    /// Activates a pending account with its one-time code: sets the password and enrols TOTP (returned).
    pub fn activate(
        &self,
        realm: Realm,
        login: &str,
        code: &str,
        new_password: &str,
    ) -> Result<(String, String), LoginError> {
        password::check_policy(new_password).map_err(|e| LoginError::Refused(e.to_string()))?;
        let code = code.trim();
        let hash = password::hash(new_password)
            .map_err(|_| LoginError::Refused("erreur interne".into()))?;
        let secret = random_bytes(20);
        let sealed_seed = self
            .conceal_seed(realm, login, &secret)
            .map_err(|_| LoginError::Refused("erreur interne".into()))?;
        let now = now_ms();
        let mut outcome = Err(LoginError::BadCredentials);
        let res = self.store.write(&mut |c| {
            outcome = Err(LoginError::BadCredentials);
            let Some(r) = c.query_one(
                "SELECT activation_hash, activation_expires, status, failures, locked_until FROM auth_accounts \
                 WHERE realm = ? AND login = ?",
                &[realm.as_str().into(), login.into()],
            )?
            else {
                return Ok(());
            };
            if int(&r, 4) > now {
                outcome = Err(LoginError::Locked((int(&r, 4) - now) / 1000 + 1));
                return Ok(());
            }
            let ok = text(&r, 2) == "pending"
                && opt_text(&r, 0).is_some_and(|h| {
                    crate::ct_eq(h.as_bytes(), token_hash(code).as_bytes())
                })
                && int(&r, 1) > now;
            if !ok {
                self.count_failure(c, realm, login, now)?;
                return Ok(());
            }
            c.execute(
                "UPDATE auth_accounts SET password_hash = ?, totp_secret = ?, activation_hash = NULL, \
                 activation_expires = NULL, status = 'active', failures = 0, locked_until = 0 \
                 WHERE realm = ? AND login = ?",
                &[
                    hash.as_str().into(),
                    sealed_seed.as_str().into(),
                    realm.as_str().into(),
                    login.into(),
                ],
            )?;
            outcome = Ok(());
            Ok(())
        });
        if res.is_err() {
            return Err(LoginError::Refused("erreur interne".into()));
        }
        outcome?;
        let issuer = if realm == Realm::Pro {
            "Socle Pro"
        } else {
            "Socle Patient"
        };
        Ok((
            totp::base32(&secret),
            totp::otpauth_uri(issuer, login, &secret),
        ))
    }

    /// Counts one more failure on the account, in the write transaction: the count is incremented where it is
    /// stored (a count read before, by concurrent attempts, would lose increments and delay the lockout).
    fn count_failure(
        &self,
        c: &mut dyn socle_store::SqlConn,
        realm: Realm,
        login: &str,
        now: i64,
    ) -> Result<(), socle_store::StoreError> {
        let Some(failures) = c
            .query_one(
                "UPDATE auth_accounts SET failures = failures + 1 WHERE realm = ? AND login = ? RETURNING failures",
                &[realm.as_str().into(), login.into()],
            )?
            .and_then(|r| r.into_iter().next())
            .and_then(|v| v.as_i64())
        else {
            return Ok(());
        };
        let over = failures - self.config.lockout_threshold;
        let locked_until = if over >= 0 {
            let secs = (self.config.lockout_base_s << over.min(20)).min(self.config.lockout_max_s);
            now + secs * 1000
        } else {
            0
        };
        if over >= 0 {
            tracing::warn!(
                realm = realm.as_str(),
                "compte verrouillé après des échecs répétés"
            );
        }
        c.execute(
            "UPDATE auth_accounts SET locked_until = ? WHERE realm = ? AND login = ?",
            &[locked_until.into(), realm.as_str().into(), login.into()],
        )?;
        Ok(())
    }

    /// First step of a login: the password. Lockout: after `lockout_threshold` consecutive failures the account
    /// is locked for `lockout_base_s`, doubling with each further failure (at most `lockout_max_s`); while
    /// locked, passwords are not even checked.
    pub fn login_password(
        &self,
        req: &AuthorizeRequest,
        login: &str,
        pass: &str,
        from: IpAddr,
    ) -> Result<LoginStep, LoginError> {
        let realm = req.realm;
        let now = now_ms();
        let mut row = None;
        self.store
            .read(&mut |c| {
                row = c.query_one(
                    "SELECT subject, password_hash, totp_secret, failures, locked_until, status FROM auth_accounts \
                     WHERE realm = ? AND login = ?",
                    &[realm.as_str().into(), login.into()],
                )?;
                Ok(())
            })
            .map_err(|_| LoginError::Refused("erreur interne".into()))?;
        let Some(r) = row else {
            // Same work as for a real account: the answer time does not reveal which logins exist.
            password::verify(pass, password::dummy_hash());
            return Err(LoginError::BadCredentials);
        };
        if int(&r, 4) > now {
            return Err(LoginError::Locked((int(&r, 4) - now) / 1000 + 1));
        }
        let ok =
            text(&r, 5) == "active" && opt_text(&r, 1).is_some_and(|h| password::verify(pass, &h));
        if !ok {
            let _ = self
                .store
                .write(&mut |c| self.count_failure(c, realm, login, now));
            return Err(LoginError::BadCredentials);
        }
        self.refresh_profile(realm, login)
            .map_err(LoginError::Refused)?;
        let trusted = self
            .config
            .trusted_networks
            .iter()
            .any(|n| n.contains(from));
        let wants_two = req.acr_values.as_deref().is_some_and(|a| {
            a.split(' ')
                .any(|v| acr_rank(v) >= acr_rank(ACR_TWO_FACTORS))
        });
        let needs_totp = realm == Realm::Patient || !trusted || wants_two;
        let subject = text(&r, 0);
        if !needs_totp {
            let _ = self.store.write(&mut |c| {
                c.execute(
                    "UPDATE auth_accounts SET failures = 0 WHERE realm = ? AND login = ?",
                    &[realm.as_str().into(), login.into()],
                )?;
                Ok(())
            });
            let auth = self
                .open_session(realm, &subject, ACR_ONE_FACTOR, &["pwd"])
                .map_err(|_| LoginError::Refused("erreur interne".into()))?;
            return Ok(LoginStep::Done(auth));
        }
        if opt_text(&r, 2).is_none() {
            return Err(LoginError::Refused(
                "un second facteur (TOTP) est exigé mais ce compte n'en a pas : contactez l'administrateur".into(),
            ));
        }
        let pending = random_token(24);
        let request = req.to_json().to_string();
        self.store
            .write(&mut |c| {
                c.execute("DELETE FROM auth_pending WHERE expires < ?", &[now.into()])?;
                c.execute(
                    "INSERT INTO auth_pending (id_hash, realm, login, request, expires, attempts) VALUES (?, ?, ?, ?, ?, 0)",
                    &[
                        token_hash(&pending).into(),
                        realm.as_str().into(),
                        login.into(),
                        request.as_str().into(),
                        (now + 5 * 60 * 1000).into(),
                    ],
                )?;
                Ok(())
            })
            .map_err(|_| LoginError::Refused("erreur interne".into()))?;
        Ok(LoginStep::NeedTotp { pending })
    }

    /// The authorization request a pending login belongs to.
    pub fn pending_request(&self, realm: Realm, pending: &str) -> Option<AuthorizeRequest> {
        let mut row = None;
        self.store
            .read(&mut |c| {
                row = c.query_one(
                    "SELECT request FROM auth_pending WHERE id_hash = ? AND realm = ? AND expires > ?",
                    &[token_hash(pending).into(), realm.as_str().into(), now_ms().into()],
                )?;
                Ok(())
            })
            .ok()?;
        let v: Value = serde_json::from_str(&text(&row?, 0)).ok()?;
        AuthorizeRequest::from_json(realm, &v)
    }

    /// Second step: the TOTP code. A code is accepted once (its step must be later than the last one used);
    /// wrong codes count towards the lockout like wrong passwords, and a pending login allows 5 tries.
    pub fn login_totp(
        &self,
        realm: Realm,
        pending: &str,
        code: &str,
    ) -> Result<AuthResult, LoginError> {
        let now = now_ms();
        let unix = (now / 1000) as u64;
        let mut outcome: Result<(String, String), LoginError> = Err(LoginError::Expired);
        self.store
            .write(&mut |c| {
                outcome = Err(LoginError::Expired);
                let Some(p) = c.query_one(
                    "SELECT login, attempts FROM auth_pending WHERE id_hash = ? AND realm = ? AND expires > ?",
                    &[token_hash(pending).into(), realm.as_str().into(), now.into()],
                )?
                else {
                    return Ok(());
                };
                let login = text(&p, 0);
                let Some(a) = c.query_one(
                    "SELECT subject, totp_secret, totp_last_step, failures, locked_until FROM auth_accounts \
                     WHERE realm = ? AND login = ?",
                    &[realm.as_str().into(), login.as_str().into()],
                )?
                else {
                    return Ok(());
                };
                if int(&a, 4) > now {
                    outcome = Err(LoginError::Locked((int(&a, 4) - now) / 1000 + 1));
                    return Ok(());
                }
                let secret = match opt_text(&a, 1) {
                    Some(stored) => self.reveal_seed(realm, &login, &stored)?,
                    None => Vec::new(),
                };
                let last = a.get(2).and_then(|v| v.as_i64()).map(|s| s as u64);
                match totp::verify(&secret, code, unix, last) {
                    Some(step) if !secret.is_empty() => {
                        c.execute(
                            "UPDATE auth_accounts SET totp_last_step = ?, failures = 0 WHERE realm = ? AND login = ?",
                            &[(step as i64).into(), realm.as_str().into(), login.as_str().into()],
                        )?;
                        c.execute(
                            "DELETE FROM auth_pending WHERE id_hash = ?",
                            &[token_hash(pending).into()],
                        )?;
                        outcome = Ok((text(&a, 0), login));
                    }
                    _ => {
                        self.count_failure(c, realm, &login, now)?;
                        if int(&p, 1) + 1 >= 5 {
                            c.execute(
                                "DELETE FROM auth_pending WHERE id_hash = ?",
                                &[token_hash(pending).into()],
                            )?;
                        } else {
                            c.execute(
                                "UPDATE auth_pending SET attempts = attempts + 1 WHERE id_hash = ?",
                                &[token_hash(pending).into()],
                            )?;
                        }
                        outcome = Err(LoginError::BadTotp);
                    }
                }
                Ok(())
            })
            .map_err(|_| LoginError::Refused("erreur interne".into()))?;
        let (subject, _login) = outcome?;
        self.open_session(realm, &subject, ACR_TWO_FACTORS, &["pwd", "otp"])
            .map_err(|_| LoginError::Refused("erreur interne".into()))
    }

    fn open_session(
        &self,
        realm: Realm,
        subject: &str,
        acr: &str,
        amr: &[&str],
    ) -> Result<AuthResult, AuthError> {
        let sid = random_token(24);
        let now = now_ms();
        let amr: Vec<String> = amr.iter().map(|s| s.to_string()).collect();
        self.store.write(&mut |c| {
            c.execute(
                "INSERT INTO auth_sessions (sid, realm, subject, acr, amr, auth_time, expires, ended) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                &[
                    token_hash(&sid).into(),
                    realm.as_str().into(),
                    subject.into(),
                    acr.into(),
                    json_list(&amr).into(),
                    (now / 1000).into(),
                    (now + self.config.session_ttl_s * 1000).into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(AuthResult {
            realm,
            subject: subject.to_string(),
            acr: acr.to_string(),
            amr,
            auth_time: now / 1000,
            sid,
        })
    }

    /// The live session a browser cookie names, if any.
    pub fn session(&self, realm: Realm, sid: &str) -> Option<AuthResult> {
        let mut row = None;
        self.store
            .read(&mut |c| {
                row = c.query_one(
                    "SELECT subject, acr, amr, auth_time FROM auth_sessions \
                     WHERE sid = ? AND realm = ? AND ended IS NULL AND expires > ?",
                    &[
                        token_hash(sid).into(),
                        realm.as_str().into(),
                        now_ms().into(),
                    ],
                )?;
                Ok(())
            })
            .ok()?;
        let r = row?;
        Some(AuthResult {
            realm,
            subject: text(&r, 0),
            acr: text(&r, 1),
            amr: parse_list(&text(&r, 2)),
            auth_time: int(&r, 3),
            sid: sid.to_string(),
        })
    }

    fn profile(&self, realm: Realm, subject: &str) -> Result<Map<String, Value>, AuthError> {
        let mut row = None;
        self.store.read(&mut |c| {
            row = c.query_one(
                "SELECT profile, status FROM auth_accounts WHERE realm = ? AND subject = ?",
                &[realm.as_str().into(), subject.into()],
            )?;
            Ok(())
        })?;
        match row {
            Some(r) if text(&r, 1) == "active" => {
                Ok(serde_json::from_str(&text(&r, 0)).unwrap_or_default())
            }
            _ => Err(AuthError::NotFound("compte inconnu ou désactivé".into())),
        }
    }

    /// Accounts of a realm, for the administration CLI: (login, subject, status, locked).
    pub fn list_accounts(
        &self,
        realm: Realm,
    ) -> Result<Vec<(String, String, String, bool)>, AuthError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                "SELECT login, subject, status, locked_until FROM auth_accounts WHERE realm = ? ORDER BY login",
                &[realm.as_str().into()],
            )?;
            Ok(())
        })?;
        let now = now_ms();
        Ok(rows
            .iter()
            .map(|r| (text(r, 0), text(r, 1), text(r, 2), int(r, 3) > now))
            .collect())
    }

    /// Lifts a lockout (administration).
    pub fn unlock(&self, realm: Realm, login: &str) -> Result<bool, AuthError> {
        let mut n = 0;
        self.store.write(&mut |c| {
            n = c.execute(
                "UPDATE auth_accounts SET failures = 0, locked_until = 0 WHERE realm = ? AND login = ?",
                &[realm.as_str().into(), login.into()],
            )?;
            Ok(())
        })?;
        Ok(n > 0)
    }

    // ------------------------------------------------------------------ app consents (MES-5)

    /// Whether the person must first consent to this application getting these data scopes (patient realm:
    /// the person alone grants each application read and/or write access; OpenID scopes need no consent).
    pub fn consent_needed(&self, req: &AuthorizeRequest, subject: &str) -> bool {
        if req.realm != Realm::Patient {
            return false;
        }
        let asked = Scopes::parse(&req.scope).unwrap_or_default();
        let data = Scopes(
            asked
                .0
                .into_iter()
                .filter(|s| matches!(s, Scope::Resource { .. }))
                .collect(),
        );
        if data.0.is_empty() {
            return false;
        }
        let mut row = None;
        let ok = self.store.read(&mut |c| {
            row = c.query_one(
                "SELECT scope FROM auth_consents WHERE realm = ? AND subject = ? AND client_id = ? AND revoked IS NULL",
                &[req.realm.as_str().into(), subject.into(), req.client_id.as_str().into()],
            )?;
            Ok(())
        });
        let granted = match (ok, row) {
            (Ok(()), Some(r)) => Scopes::parse(&text(&r, 0)).unwrap_or_default(),
            _ => return true,
        };
        !granted.not_covered(&data).is_empty()
    }

    /// Records the person's consent to the application's data scopes of `req`.
    pub fn grant_consent(&self, req: &AuthorizeRequest, subject: &str) -> Result<(), AuthError> {
        let asked = Scopes::parse(&req.scope).map_err(AuthError::Invalid)?;
        let data: Vec<String> = asked
            .0
            .iter()
            .filter(|s| matches!(s, Scope::Resource { .. }))
            .map(ToString::to_string)
            .collect();
        let now = now_ms();
        self.store.write(&mut |c| {
            c.execute(
                "DELETE FROM auth_consents WHERE realm = ? AND subject = ? AND client_id = ?",
                &[req.realm.as_str().into(), subject.into(), req.client_id.as_str().into()],
            )?;
            c.execute(
                "INSERT INTO auth_consents (realm, subject, client_id, scope, granted, revoked) VALUES (?, ?, ?, ?, ?, NULL)",
                &[
                    req.realm.as_str().into(),
                    subject.into(),
                    req.client_id.as_str().into(),
                    data.join(" ").into(),
                    now.into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    /// The applications a person consented to: (client id, name, scopes, granted ms).
    pub fn consents(
        &self,
        realm: Realm,
        subject: &str,
    ) -> Result<Vec<(String, String, String, i64)>, AuthError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                "SELECT k.client_id, COALESCE(a.name, k.client_id), k.scope, k.granted FROM auth_consents k \
                 LEFT JOIN auth_clients a ON a.client_id = k.client_id \
                 WHERE k.realm = ? AND k.subject = ? AND k.revoked IS NULL ORDER BY k.granted",
                &[realm.as_str().into(), subject.into()],
            )?;
            Ok(())
        })?;
        Ok(rows
            .iter()
            .map(|r| (text(r, 0), text(r, 1), text(r, 2), int(r, 3)))
            .collect())
    }

    /// Withdraws a consent: the application's refresh tokens and access tokens for this person stop working.
    pub fn revoke_consent(
        &self,
        realm: Realm,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, AuthError> {
        let mut n = 0;
        let mut grants = Vec::new();
        self.store.write(&mut |c| {
            n = c.execute(
                "UPDATE auth_consents SET revoked = ? WHERE realm = ? AND subject = ? AND client_id = ? AND revoked IS NULL",
                &[now_ms().into(), realm.as_str().into(), subject.into(), client_id.into()],
            )?;
            // Every grant of this application for this person: from refresh tokens and from codes (an access
            // token issued without a refresh token carries its code's grant).
            grants = c
                .query(
                    "SELECT grant_id FROM auth_refresh WHERE realm = ? AND subject = ? AND client_id = ? \
                     UNION SELECT grant_id FROM auth_codes WHERE realm = ? AND subject = ? AND client_id = ?",
                    &[
                        realm.as_str().into(),
                        subject.into(),
                        client_id.into(),
                        realm.as_str().into(),
                        subject.into(),
                        client_id.into(),
                    ],
                )?
                .iter()
                .map(|r| text(r, 0))
                .collect();
            Ok(())
        })?;
        for g in grants {
            self.revoke_grant(&g)?;
        }
        Ok(n > 0)
    }

    // ------------------------------------------------------------------ clients

    pub fn register_client(&self, c: NewClient) -> Result<ClientInfo, AuthError> {
        let method = c.auth_method.as_str();
        if ![
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth",
            "none",
        ]
        .contains(&method)
        {
            return Err(AuthError::Invalid(format!(
                "méthode d'authentification inconnue : « {method} » (client_secret_basic, private_key_jwt, \
                 tls_client_auth, self_signed_tls_client_auth ou none)"
            )));
        }
        if c.name.trim().is_empty() {
            return Err(AuthError::Invalid("le client doit avoir un nom".into()));
        }
        for u in c.redirect_uris.iter().chain(&c.post_logout_uris) {
            let ok = (u.starts_with("https://") || u.starts_with("http://") || u.contains(":/"))
                && !u.contains('#')
                && !u.contains(char::is_whitespace);
            if !ok {
                return Err(AuthError::Invalid(format!(
                    "URI de redirection invalide : « {u} »"
                )));
            }
        }
        let interactive = !c.redirect_uris.is_empty();
        if !interactive && method == "none" {
            return Err(AuthError::Invalid(
                "un client public (none) doit avoir une URI de redirection".into(),
            ));
        }
        let scope = c
            .scope
            .clone()
            .unwrap_or_else(|| default_scope(c.realm, interactive).to_string());
        let parsed = Scopes::parse(&scope).map_err(AuthError::Invalid)?;
        let jwks = match (method, &c.jwks) {
            ("private_key_jwt", Some(j)) => {
                let keys = j
                    .get("keys")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if keys.is_empty() {
                    return Err(AuthError::Invalid(
                        "JWKS vide : au moins une clé publique attendue".into(),
                    ));
                }
                for k in &keys {
                    PublicJwk::from_json(k).map_err(|e| AuthError::Invalid(e.to_string()))?;
                }
                Some(j.to_string())
            }
            ("private_key_jwt", None) => {
                return Err(AuthError::Invalid(
                    "private_key_jwt exige le JWKS public du client".into(),
                ));
            }
            ("tls_client_auth", _) => {
                let dn = c.tls_subject.as_deref().unwrap_or("").trim();
                if dn.is_empty() {
                    return Err(AuthError::Invalid(
                        "tls_client_auth exige le nom distinctif (sujet) du certificat du client"
                            .into(),
                    ));
                }
                crate::mtls::parse_dn(dn).map_err(AuthError::Invalid)?;
                Some(json!({ "tls_client_auth_subject_dn": dn }).to_string())
            }
            ("self_signed_tls_client_auth", _) => {
                if c.tls_thumbprints.is_empty() {
                    return Err(AuthError::Invalid(
                        "self_signed_tls_client_auth exige le certificat du client (son empreinte)"
                            .into(),
                    ));
                }
                for t in &c.tls_thumbprints {
                    crate::mtls::check_thumbprint(t).map_err(AuthError::Invalid)?;
                }
                Some(json!({ "x5t#S256": c.tls_thumbprints }).to_string())
            }
            _ => None,
        };
        let secret = matches!(method, "client_secret_basic" | "client_secret_post")
            .then(|| random_token(32));
        let client_id = format!("socle-{}", random_token(12));
        let now = now_ms();
        self.store.write(&mut |t| {
            t.execute(
                "INSERT INTO auth_clients (client_id, realm, name, auth_method, secret_hash, jwks, redirect_uris, \
                 post_logout_uris, scope, created, disabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                &[
                    client_id.as_str().into(),
                    c.realm.as_str().into(),
                    c.name.as_str().into(),
                    method.into(),
                    secret.as_deref().map(token_hash).into(),
                    jwks.clone().into(),
                    json_list(&c.redirect_uris).into(),
                    json_list(&c.post_logout_uris).into(),
                    parsed.to_string().into(),
                    now.into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(ClientInfo {
            client_id,
            realm: c.realm,
            name: c.name,
            auth_method: method.into(),
            redirect_uris: c.redirect_uris,
            post_logout_uris: c.post_logout_uris,
            scope: parsed.to_string(),
            secret,
            certificate: None,
        })
    }

    fn client_row(&self, client_id: &str) -> Result<Option<Row>, AuthError> {
        let mut row = None;
        self.store.read(&mut |c| {
            row = c.query_one(
                "SELECT client_id, realm, name, auth_method, secret_hash, jwks, redirect_uris, post_logout_uris, scope, disabled \
                 FROM auth_clients WHERE client_id = ?",
                &[client_id.into()],
            )?;
            Ok(())
        })?;
        Ok(row)
    }

    pub fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, AuthError> {
        Ok(self.client_row(client_id)?.and_then(|r| {
            Some(ClientInfo {
                client_id: text(&r, 0),
                realm: Realm::parse(&text(&r, 1))?,
                name: text(&r, 2),
                auth_method: text(&r, 3),
                redirect_uris: parse_list(&text(&r, 6)),
                post_logout_uris: parse_list(&text(&r, 7)),
                scope: text(&r, 8),
                secret: None,
                certificate: None,
            })
        }))
    }

    pub fn list_clients(&self) -> Result<Vec<ClientInfo>, AuthError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query("SELECT client_id FROM auth_clients ORDER BY created", &[])?;
            Ok(())
        })?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(ci) = self.client(&text(&r, 0))? {
                out.push(ci);
            }
        }
        Ok(out)
    }

    /// Authenticates the client of a token/introspection/revocation request in `realm`: `client_secret_basic`,
    /// `client_secret_post`, `private_key_jwt` (RFC 7523: `iss` = `sub` = client id, `aud` = the endpoint or
    /// the issuer, short-lived, `jti` used once), or `none` for public clients (only where `allow_public`).
    pub fn authenticate_client(
        &self,
        realm: Realm,
        auth: &ClientAuth,
        endpoint: &str,
        allow_public: bool,
    ) -> Result<ClientInfo, TokenError> {
        let bad = |d: &str| TokenError::new("invalid_client", d);
        let methods = [
            auth.basic.is_some(),
            auth.client_secret.is_some(),
            auth.assertion.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if methods > 1 {
            return Err(TokenError::new(
                "invalid_request",
                "une seule méthode d'authentification du client par requête",
            ));
        }
        let (client_id, proof) = if let Some((id, secret)) = &auth.basic {
            (id.clone(), Some(("secret", secret.clone())))
        } else if let Some(secret) = &auth.client_secret {
            let id = auth
                .client_id
                .clone()
                .ok_or_else(|| bad("client_id absent"))?;
            (id, Some(("secret", secret.clone())))
        } else if let Some(assertion) = &auth.assertion {
            if auth.assertion_type.as_deref() != Some(ASSERTION_TYPE) {
                return Err(bad("client_assertion_type attendu : jwt-bearer"));
            }
            let jws =
                Jws::decode(assertion).map_err(|e| bad(&format!("client_assertion : {e}")))?;
            let id = jws
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("client_assertion sans sub"))?
                .to_string();
            if auth.client_id.as_deref().is_some_and(|c| c != id) {
                return Err(bad("client_id ne correspond pas à l'assertion"));
            }
            (id, Some(("jwt", assertion.clone())))
        } else {
            let id = auth
                .client_id
                .clone()
                .ok_or_else(|| bad("authentification du client absente"))?;
            (id, None)
        };
        let row = self
            .client_row(&client_id)?
            .ok_or_else(|| bad("client inconnu"))?;
        if text(&row, 1) != realm.as_str() {
            return Err(bad("client inconnu dans ce domaine"));
        }
        if int(&row, 9) != 0 {
            return Err(bad("client désactivé"));
        }
        let method = text(&row, 3);
        let mut certificate = None;
        match (method.as_str(), proof) {
            ("client_secret_basic" | "client_secret_post", Some(("secret", s))) => {
                let stored = opt_text(&row, 4).unwrap_or_default();
                if !crate::ct_eq(stored.as_bytes(), token_hash(&s).as_bytes()) {
                    return Err(bad("secret du client incorrect"));
                }
            }
            ("private_key_jwt", Some(("jwt", a))) => {
                self.check_assertion(
                    realm,
                    &client_id,
                    &opt_text(&row, 5).unwrap_or_default(),
                    &a,
                    endpoint,
                )?;
            }
            ("tls_client_auth" | "self_signed_tls_client_auth", None) => {
                certificate = Some(self.check_certificate(
                    &method,
                    &opt_text(&row, 5).unwrap_or_default(),
                    auth.certificate.as_ref(),
                )?);
            }
            ("none", None) if allow_public => {}
            ("none", None) => return Err(bad("un client public ne peut pas appeler ce service")),
            (m, _) => {
                return Err(bad(&format!(
                    "méthode d'authentification du client non conforme à son enregistrement ({m})"
                )));
            }
        }
        Ok(ClientInfo {
            client_id,
            realm,
            name: text(&row, 2),
            auth_method: method,
            redirect_uris: parse_list(&text(&row, 6)),
            post_logout_uris: parse_list(&text(&row, 7)),
            scope: text(&row, 8),
            secret: None,
            certificate,
        })
    }

    /// A client registered for mutual TLS: its certificate must have been presented, and be the registered
    /// one (`self_signed_tls_client_auth`, by thumbprint) or one issued by a configured authority to the
    /// registered subject (`tls_client_auth`). Returns the certificate's thumbprint.
    fn check_certificate(
        &self,
        method: &str,
        registration: &str,
        presented: Option<&crate::mtls::ClientCertificate>,
    ) -> Result<String, TokenError> {
        let bad = |d: String| TokenError::new("invalid_client", d);
        let Some(cert) = presented else {
            return Err(bad(if self.config.mtls {
                "certificat client absent : ce client s'authentifie par TLS mutuel".into()
            } else {
                "ce client s'authentifie par TLS mutuel, que ce serveur n'offre pas (--tls-client-ca)".into()
            }));
        };
        let reg: Value = serde_json::from_str(registration).unwrap_or(Value::Null);
        if method == "self_signed_tls_client_auth" {
            let known = reg
                .get("x5t#S256")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(&cert.thumbprint)));
            if !known {
                return Err(bad("certificat client non enregistré pour ce client".into()));
            }
        } else {
            if !cert.chain_verified {
                return Err(bad(
                    "certificat client non reconnu : autorité inconnue, certificat expiré ou révoqué, ou liste \
                     de révocation périmée"
                        .into(),
                ));
            }
            let dn = reg
                .get("tls_client_auth_subject_dn")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let registered = crate::mtls::parse_dn(dn).map_err(bad)?;
            if !crate::mtls::subject_matches(&registered, &cert.subject) {
                return Err(bad(format!(
                    "le sujet du certificat client ({}) n'est pas celui enregistré",
                    cert.subject_text()
                )));
            }
        }
        Ok(cert.thumbprint.clone())
    }

    fn check_assertion(
        &self,
        realm: Realm,
        client_id: &str,
        jwks: &str,
        assertion: &str,
        endpoint: &str,
    ) -> Result<(), TokenError> {
        let bad = |d: String| TokenError::new("invalid_client", d);
        let keys: Vec<PublicJwk> = serde_json::from_str::<Value>(jwks)
            .ok()
            .and_then(|v| v.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| PublicJwk::from_json(k).ok())
            .collect();
        let jws = Jws::decode(assertion).map_err(|e| bad(format!("client_assertion : {e}")))?;
        jws.verify(&keys)
            .map_err(|e| bad(format!("client_assertion : {e}")))?;
        let claims = &jws.claims;
        let s = |k: &str| claims.get(k).and_then(Value::as_str);
        if s("iss") != Some(client_id) || s("sub") != Some(client_id) {
            return Err(bad(
                "client_assertion : iss et sub doivent être l'identifiant du client".into(),
            ));
        }
        let issuer = self.issuer(realm);
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == endpoint || *a == issuer,
            Some(Value::Array(a)) => a
                .iter()
                .any(|x| x.as_str() == Some(endpoint) || x.as_str() == Some(&issuer)),
            _ => false,
        };
        if !aud_ok {
            return Err(bad("client_assertion : audience incorrecte".into()));
        }
        let now = now_ms() / 1000;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("client_assertion sans exp".into()))?;
        if exp < now - 30 || exp > now + 600 {
            return Err(bad("client_assertion expirée ou de durée excessive".into()));
        }
        let jti = s("jti").ok_or_else(|| bad("client_assertion sans jti".into()))?;
        let mut replay = false;
        let key = format!("{client_id}:{jti}");
        self.store.write(&mut |c| {
            replay = false;
            c.execute(
                "DELETE FROM auth_assertions WHERE expires < ?",
                &[now_ms().into()],
            )?;
            if c.query_one(
                "SELECT 1 FROM auth_assertions WHERE jti = ?",
                &[key.as_str().into()],
            )?
            .is_some()
            {
                replay = true;
                return Ok(());
            }
            c.execute(
                "INSERT INTO auth_assertions (jti, expires) VALUES (?, ?)",
                &[key.as_str().into(), ((exp + 60) * 1000).into()],
            )?;
            Ok(())
        })?;
        if replay {
            return Err(bad("client_assertion déjà utilisée (jti rejoué)".into()));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ authorization endpoint

    /// Validates an authorization request (code flow, PKCE S256 mandatory).
    pub fn check_authorize(
        &self,
        realm: Realm,
        q: &[(String, String)],
    ) -> Result<AuthorizeRequest, AuthorizeError> {
        let display = AuthorizeError::Display;
        for k in [
            "client_id",
            "redirect_uri",
            "response_type",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "prompt",
            "acr_values",
        ] {
            single(q, k).map_err(display)?;
        }
        let client_id =
            form_get(q, "client_id").ok_or_else(|| display("client_id absent".into()))?;
        let client = self
            .client(client_id)
            .map_err(|_| display("erreur interne".into()))?
            .filter(|c| c.realm == realm)
            .ok_or_else(|| display(format!("application inconnue : « {client_id} »")))?;
        let redirect_uri = match form_get(q, "redirect_uri") {
            Some(u) if client.redirect_uris.iter().any(|r| r == u) => u.to_string(),
            Some(u) => {
                return Err(display(format!(
                    "adresse de retour non enregistrée pour cette application : « {u} »"
                )));
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(display("redirect_uri absent".into())),
        };
        let state = form_get(q, "state").map(str::to_string);
        let fail = |error: &'static str, d: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description: d.to_string(),
        };
        if form_get(q, "request").is_some() || form_get(q, "request_uri").is_some() {
            return Err(fail(
                "request_not_supported",
                "objets de requête non pris en charge",
            ));
        }
        match form_get(q, "response_type") {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "seul response_type=code est pris en charge",
                ));
            }
            None => return Err(fail("invalid_request", "response_type absent")),
        }
        let scope_text = form_get(q, "scope").unwrap_or("");
        let requested = Scopes::parse(scope_text).map_err(|e| fail("invalid_scope", &e))?;
        if !requested.has("openid") {
            return Err(fail("invalid_scope", "la portée openid est requise"));
        }
        let granted = Scopes::parse(&client.scope).unwrap_or_default();
        let extra = granted.not_covered(&requested);
        if !extra.is_empty() {
            let names: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            return Err(fail(
                "invalid_scope",
                &format!(
                    "portées non autorisées pour cette application : {}",
                    names.join(" ")
                ),
            ));
        }
        if requested.0.iter().any(|s| {
            matches!(
                s,
                Scope::Resource {
                    context: crate::Context::System,
                    ..
                }
            )
        }) {
            return Err(fail(
                "invalid_scope",
                "les portées system/ sont réservées aux clients sans utilisateur",
            ));
        }
        let challenge = form_get(q, "code_challenge")
            .ok_or_else(|| fail("invalid_request", "PKCE requis : code_challenge absent"))?;
        if form_get(q, "code_challenge_method") != Some("S256") {
            return Err(fail(
                "invalid_request",
                "PKCE : code_challenge_method=S256 requis",
            ));
        }
        if challenge.len() != 43 || crate::jose::unb64(challenge).is_none_or(|b| b.len() != 32) {
            return Err(fail(
                "invalid_request",
                "PKCE : code_challenge invalide (SHA-256 en base64url attendu)",
            ));
        }
        let prompt = form_get(q, "prompt").unwrap_or("");
        if prompt.split(' ').any(|p| p == "none") {
            return Err(fail("login_required", "connexion interactive requise"));
        }
        Ok(AuthorizeRequest {
            realm,
            client_id: client.client_id,
            client_name: client.name,
            redirect_uri,
            scope: requested.to_string(),
            state,
            nonce: form_get(q, "nonce").map(str::to_string),
            code_challenge: challenge.to_string(),
            acr_values: form_get(q, "acr_values").map(str::to_string),
            force_login: prompt.split(' ').any(|p| p == "login"),
        })
    }

    /// Whether an existing session satisfies the request (no re-authentication needed).
    pub fn session_satisfies(&self, req: &AuthorizeRequest, auth: &AuthResult) -> bool {
        if req.force_login {
            return false;
        }
        match &req.acr_values {
            Some(a) => a
                .split(' ')
                .any(|v| acr_rank(&auth.acr) >= acr_rank(v) && acr_rank(v) > 0),
            None => true,
        }
    }

    /// Issues a one-time authorization code (valid `code_ttl_s`). `acting_for`: the local `Patient` id of the
    /// person the holder chose to act for as their legal representative (checked against the account's
    /// representations; `None`: their own record).
    pub fn issue_code(
        &self,
        req: &AuthorizeRequest,
        auth: &AuthResult,
        acting_for: Option<&str>,
    ) -> Result<String, AuthError> {
        let code = random_token(32);
        let grant = random_token(16);
        let now = now_ms();
        if let Some(p) = acting_for
            && (req.realm != Realm::Patient
                || !self
                    .representations(&auth.subject)?
                    .iter()
                    .any(|r| r.patient == p))
        {
            return Err(AuthError::Invalid(
                "ce compte ne représente pas la personne choisie".into(),
            ));
        }
        self.store.write(&mut |c| {
            c.execute("DELETE FROM auth_codes WHERE expires < ?", &[(now - 3600 * 1000).into()])?;
            if let Some(p) = acting_for {
                c.execute(
                    "INSERT INTO auth_grant_context (grant_id, subject, patient, created) VALUES (?, ?, ?, ?)",
                    &[grant.as_str().into(), auth.subject.as_str().into(), p.into(), now.into()],
                )?;
            }
            c.execute(
                "INSERT INTO auth_codes (code_hash, grant_id, realm, client_id, subject, redirect_uri, scope, nonce, \
                 challenge, acr, amr, auth_time, sid, expires, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                &[
                    token_hash(&code).into(),
                    grant.as_str().into(),
                    req.realm.as_str().into(),
                    req.client_id.as_str().into(),
                    auth.subject.as_str().into(),
                    req.redirect_uri.as_str().into(),
                    req.scope.as_str().into(),
                    req.nonce.clone().into(),
                    req.code_challenge.as_str().into(),
                    auth.acr.as_str().into(),
                    json_list(&auth.amr).into(),
                    auth.auth_time.into(),
                    token_hash(&auth.sid).into(),
                    (now + self.config.code_ttl_s * 1000).into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(code)
    }

    // ------------------------------------------------------------------ token endpoint

    /// The token endpoint (`authorization_code`, `refresh_token`, `client_credentials`); returns the JSON
    /// token response.
    pub fn token(
        &self,
        realm: Realm,
        form: &[(String, String)],
        auth: &ClientAuth,
    ) -> Result<Value, TokenError> {
        for k in [
            "grant_type",
            "code",
            "redirect_uri",
            "code_verifier",
            "refresh_token",
            "scope",
        ] {
            single(form, k).map_err(|e| TokenError::new("invalid_request", e))?;
        }
        let endpoint = format!("{}/token", self.issuer(realm));
        let grant = form_get(form, "grant_type")
            .ok_or_else(|| TokenError::new("invalid_request", "grant_type absent"))?;
        match grant {
            "authorization_code" => {
                let client = self.authenticate_client(realm, auth, &endpoint, true)?;
                self.exchange_code(realm, &client, form)
            }
            "refresh_token" => {
                let client = self.authenticate_client(realm, auth, &endpoint, true)?;
                self.refresh(realm, &client, form)
            }
            "client_credentials" => {
                let client = self.authenticate_client(realm, auth, &endpoint, false)?;
                self.client_credentials(realm, &client, form)
            }
            other => Err(TokenError::new(
                "unsupported_grant_type",
                format!("type d'autorisation non pris en charge : « {other} »"),
            )),
        }
    }

    fn exchange_code(
        &self,
        realm: Realm,
        client: &ClientInfo,
        form: &[(String, String)],
    ) -> Result<Value, TokenError> {
        let code = form_get(form, "code")
            .ok_or_else(|| TokenError::new("invalid_request", "code absent"))?;
        let verifier = form_get(form, "code_verifier")
            .ok_or_else(|| TokenError::new("invalid_request", "PKCE : code_verifier absent"))?;
        let now = now_ms();
        let mut row = None;
        let mut replayed: Option<String> = None;
        self.store.write(&mut |c| {
            row = None;
            replayed = None;
            let Some(r) = c.query_one(
                "SELECT grant_id, client_id, subject, redirect_uri, scope, nonce, challenge, acr, amr, auth_time, sid, expires, used \
                 FROM auth_codes WHERE code_hash = ? AND realm = ?",
                &[token_hash(code).into(), realm.as_str().into()],
            )?
            else {
                return Ok(());
            };
            if int(&r, 12) != 0 {
                replayed = Some(text(&r, 0));
                return Ok(());
            }
            c.execute("UPDATE auth_codes SET used = 1 WHERE code_hash = ?", &[token_hash(code).into()])?;
            row = Some(r);
            Ok(())
        })?;
        if let Some(grant) = replayed {
            // RFC 6749 §4.1.2: a code used twice revokes what it produced.
            tracing::warn!(
                realm = realm.as_str(),
                "code d'autorisation rejoué : autorisation révoquée"
            );
            self.revoke_grant(&grant)?;
            return Err(TokenError::new(
                "invalid_grant",
                "code d'autorisation déjà utilisé",
            ));
        }
        let r =
            row.ok_or_else(|| TokenError::new("invalid_grant", "code d'autorisation inconnu"))?;
        if int(&r, 11) < now {
            return Err(TokenError::new(
                "invalid_grant",
                "code d'autorisation expiré",
            ));
        }
        if text(&r, 1) != client.client_id {
            return Err(TokenError::new(
                "invalid_grant",
                "code émis pour une autre application",
            ));
        }
        if form_get(form, "redirect_uri").is_some_and(|u| u != text(&r, 3)) {
            return Err(TokenError::new(
                "invalid_grant",
                "redirect_uri différente de celle de la demande",
            ));
        }
        if !crate::ct_eq(pkce_challenge(verifier).as_bytes(), text(&r, 6).as_bytes()) {
            return Err(TokenError::new(
                "invalid_grant",
                "PKCE : code_verifier ne correspond pas au code_challenge",
            ));
        }
        let grant = Grant {
            id: text(&r, 0),
            realm,
            client_id: client.client_id.clone(),
            subject: text(&r, 2),
            scope: text(&r, 4),
            acr: Some(text(&r, 7)),
            amr: parse_list(&text(&r, 8)),
            auth_time: Some(int(&r, 9)),
            sid: opt_text(&r, 10),
            cnf: client.certificate.clone(),
        };
        self.respond(&grant, opt_text(&r, 5).as_deref(), true)
    }

    fn refresh(
        &self,
        realm: Realm,
        client: &ClientInfo,
        form: &[(String, String)],
    ) -> Result<Value, TokenError> {
        let token = form_get(form, "refresh_token")
            .ok_or_else(|| TokenError::new("invalid_request", "refresh_token absent"))?;
        let now = now_ms();
        let mut found = None;
        self.store.read(&mut |c| {
            found = c.query_one(
                "SELECT grant_id, client_id, subject, scope, acr, amr, auth_time, sid, expires, state, \
                 (SELECT COUNT(*) FROM auth_refresh x WHERE x.grant_id = auth_refresh.grant_id AND x.state = 'revoked') \
                 FROM auth_refresh WHERE token_hash = ? AND realm = ?",
                &[token_hash(token).into(), realm.as_str().into()],
            )?;
            Ok(())
        })?;
        let reused = |grant: &str| -> Result<Value, TokenError> {
            // A rotated token presented again: it was stolen or leaked. The whole grant is revoked.
            tracing::warn!(
                realm = realm.as_str(),
                "jeton de rafraîchissement réutilisé : autorisation révoquée"
            );
            self.revoke_grant(grant)?;
            Err(TokenError::new(
                "invalid_grant",
                "jeton de rafraîchissement déjà utilisé : autorisation révoquée",
            ))
        };
        if let Some(r) = &found
            && text(r, 9) == "rotated"
        {
            return reused(&text(r, 0));
        }
        let r = found
            .ok_or_else(|| TokenError::new("invalid_grant", "jeton de rafraîchissement inconnu"))?;
        // A grant revoked while this token's predecessor was being rotated: the revocation marked the rows it
        // found, this one came after (its access tokens' marker lasts only their lifetime; the rows stay).
        if text(&r, 9) != "active"
            || int(&r, 10) > 0
            || self.is_revoked(&format!("g:{}", text(&r, 0)))
        {
            return Err(TokenError::new(
                "invalid_grant",
                "jeton de rafraîchissement révoqué",
            ));
        }
        if text(&r, 1) != client.client_id {
            return Err(TokenError::new(
                "invalid_grant",
                "jeton émis pour une autre application",
            ));
        }
        if int(&r, 8) <= now {
            return Err(TokenError::new(
                "invalid_grant",
                "jeton de rafraîchissement expiré",
            ));
        }
        let mut scope = text(&r, 3);
        if let Some(asked) = form_get(form, "scope") {
            let asked = Scopes::parse(asked).map_err(|e| TokenError::new("invalid_scope", e))?;
            let had = Scopes::parse(&scope).unwrap_or_default();
            if !had.not_covered(&asked).is_empty() {
                return Err(TokenError::new(
                    "invalid_scope",
                    "portée plus large que celle accordée",
                ));
            }
            scope = asked.to_string();
        }
        // Rotation, only once everything is checked; a concurrent use of the same token loses the race here.
        let mut rotated = 0;
        self.store.write(&mut |c| {
            rotated = c.execute(
                "UPDATE auth_refresh SET state = 'rotated' WHERE token_hash = ? AND state = 'active'",
                &[token_hash(token).into()],
            )?;
            Ok(())
        })?;
        if rotated == 0 {
            return reused(&text(&r, 0));
        }
        let grant = Grant {
            id: text(&r, 0),
            realm,
            client_id: client.client_id.clone(),
            subject: text(&r, 2),
            scope,
            acr: opt_text(&r, 4),
            amr: parse_list(&opt_text(&r, 5).unwrap_or_default()),
            auth_time: r.get(6).and_then(|v| v.as_i64()),
            sid: opt_text(&r, 7),
            cnf: client.certificate.clone(),
        };
        self.respond(&grant, None, false)
    }

    fn client_credentials(
        &self,
        realm: Realm,
        client: &ClientInfo,
        form: &[(String, String)],
    ) -> Result<Value, TokenError> {
        let allowed = Scopes::parse(&client.scope).unwrap_or_default();
        let asked = match form_get(form, "scope") {
            Some(s) => Scopes::parse(s).map_err(|e| TokenError::new("invalid_scope", e))?,
            None => Scopes(
                allowed
                    .0
                    .iter()
                    .filter(|s| {
                        matches!(
                            s,
                            Scope::Resource {
                                context: crate::Context::System,
                                ..
                            }
                        )
                    })
                    .cloned()
                    .collect(),
            ),
        };
        let extra = allowed.not_covered(&asked);
        if !extra.is_empty() {
            let names: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            return Err(TokenError::new(
                "invalid_scope",
                format!("portées non autorisées : {}", names.join(" ")),
            ));
        }
        if asked.0.iter().any(|s| {
            !matches!(
                s,
                Scope::Resource {
                    context: crate::Context::System,
                    ..
                }
            )
        }) {
            return Err(TokenError::new(
                "invalid_scope",
                "sans utilisateur, seules les portées system/ sont possibles",
            ));
        }
        if asked.0.is_empty() {
            return Err(TokenError::new("invalid_scope", "aucune portée demandée"));
        }
        let grant = Grant {
            id: random_token(16),
            realm,
            client_id: client.client_id.clone(),
            subject: client.client_id.clone(),
            scope: asked.to_string(),
            acr: None,
            amr: Vec::new(),
            auth_time: None,
            sid: None,
            cnf: client.certificate.clone(),
        };
        self.respond(&grant, None, false)
    }

    /// Signs the access token (and ID token, refresh token as the grant allows) and builds the response.
    fn respond(&self, g: &Grant, nonce: Option<&str>, first: bool) -> Result<Value, TokenError> {
        let now = now_ms() / 1000;
        let scopes = Scopes::parse(&g.scope).unwrap_or_default();
        let user = g.acr.is_some();
        if user && g.realm == Realm::Pro {
            let mut login = None;
            self.store.read(&mut |c| {
                login = c.query_one(
                    "SELECT login FROM auth_accounts WHERE realm = ? AND subject = ?",
                    &[g.realm.as_str().into(), g.subject.as_str().into()],
                )?;
                Ok(())
            })?;
            if let Some(r) = login {
                self.refresh_profile(g.realm, &text(&r, 0))
                    .map_err(|m| TokenError::new("invalid_grant", m))?;
            }
        }
        let mut profile = if user {
            self.profile(g.realm, &g.subject)
                .map_err(|_| TokenError::new("invalid_grant", "compte inconnu ou désactivé"))?
        } else {
            Map::new()
        };
        if user && g.realm == Realm::Patient {
            // Acting as a legal representative: the tokens speak for the represented person's record, as long
            // as the representation lasts.
            match self.grant_context(&g.id) {
                Ok(None) => {}
                Ok(Some(r)) => {
                    profile.insert("patient".into(), r.patient.into());
                    profile.insert("representative".into(), true.into());
                    profile.insert("represented_ins".into(), r.ins.into());
                }
                Err(AuthError::NotFound(m)) => return Err(TokenError::new("invalid_grant", m)),
                Err(e) => return Err(e.into()),
            }
        }
        let jti = random_token(16);
        let mut at = Map::new();
        at.insert("iss".into(), self.issuer(g.realm).into());
        at.insert("sub".into(), g.subject.clone().into());
        at.insert("aud".into(), self.audience().into());
        at.insert("client_id".into(), g.client_id.clone().into());
        at.insert("scope".into(), g.scope.clone().into());
        at.insert("iat".into(), now.into());
        at.insert("exp".into(), (now + self.config.access_ttl_s).into());
        at.insert("jti".into(), jti.into());
        at.insert("gid".into(), g.id.clone().into());
        if let Some(acr) = &g.acr {
            at.insert("acr".into(), acr.clone().into());
            at.insert("amr".into(), g.amr.clone().into());
        }
        if let Some(t) = g.auth_time {
            at.insert("auth_time".into(), t.into());
        }
        if !user {
            at.insert("socle_client".into(), true.into());
        }
        if let Some(t) = &g.cnf {
            at.insert("cnf".into(), json!({ "x5t#S256": t }));
        }
        for (k, v) in &profile {
            at.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let access = self.keys.sign(Alg::Es256, &Value::Object(at))?;
        let mut resp = Map::new();
        resp.insert("access_token".into(), access.into());
        resp.insert("token_type".into(), "Bearer".into());
        resp.insert("expires_in".into(), self.config.access_ttl_s.into());
        resp.insert("scope".into(), g.scope.clone().into());
        if user
            && scopes.has("launch/patient")
            && let Some(p) = profile.get("patient").and_then(Value::as_str)
        {
            resp.insert("patient".into(), p.into());
        }
        if user && scopes.has("openid") && first {
            let mut id = Map::new();
            id.insert("iss".into(), self.issuer(g.realm).into());
            id.insert("sub".into(), g.subject.clone().into());
            id.insert("aud".into(), g.client_id.clone().into());
            id.insert("iat".into(), now.into());
            id.insert("exp".into(), (now + self.config.id_ttl_s).into());
            if let Some(t) = g.auth_time {
                id.insert("auth_time".into(), t.into());
            }
            if let Some(n) = nonce {
                id.insert("nonce".into(), n.into());
            }
            if let Some(acr) = &g.acr {
                id.insert("acr".into(), acr.clone().into());
                id.insert("amr".into(), g.amr.clone().into());
            }
            if let Some(sid) = &g.sid {
                id.insert("sid".into(), sid.clone().into());
            }
            if scopes.has("fhirUser")
                && let Some(u) = profile.get("fhirUser")
            {
                id.insert("fhirUser".into(), u.clone());
            }
            if scopes.has("profile") {
                for k in ["given_name", "family_name", "name"] {
                    if let Some(v) = profile.get(k) {
                        id.insert(k.into(), v.clone());
                    }
                }
            }
            resp.insert(
                "id_token".into(),
                self.keys.sign(Alg::Rs256, &Value::Object(id))?.into(),
            );
        }
        if user && (scopes.has("offline_access") || scopes.has("online_access")) {
            let rt = random_token(32);
            let expires = now_ms() + self.config.refresh_ttl_s * 1000;
            self.store.write(&mut |c| {
                c.execute(
                    "INSERT INTO auth_refresh (token_hash, grant_id, realm, client_id, subject, scope, acr, amr, auth_time, \
                     sid, expires, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)",
                    &[
                        token_hash(&rt).into(),
                        g.id.as_str().into(),
                        g.realm.as_str().into(),
                        g.client_id.as_str().into(),
                        g.subject.as_str().into(),
                        g.scope.as_str().into(),
                        g.acr.clone().into(),
                        json_list(&g.amr).into(),
                        g.auth_time.into(),
                        g.sid.clone().into(),
                        expires.into(),
                        now_ms().into(),
                    ],
                )?;
                Ok(())
            })?;
            resp.insert("refresh_token".into(), rt.into());
        }
        Ok(Value::Object(resp))
    }

    fn revoke_grant(&self, grant: &str) -> Result<(), AuthError> {
        self.store.write(&mut |c| {
            c.execute(
                "UPDATE auth_refresh SET state = 'revoked' WHERE grant_id = ?",
                &[grant.into()],
            )?;
            Ok(())
        })?;
        let exp = now_ms() + (self.config.access_ttl_s + 60) * 1000;
        self.revoke_ids(&[(format!("g:{grant}"), exp)])
    }

    // ------------------------------------------------------------------ access tokens

    /// Checks a bearer access token: our signature, issuer, audience, expiry, not revoked. No database access.
    /// Verified tokens are remembered (up to `VERIFIED_CAP`, then forgotten all at once): a client presents the
    /// same token many times, and only the first use pays the signature check; expiry and revocation are checked
    /// at every use.
    pub fn validate(&self, token: &str) -> Result<Arc<Principal>, String> {
        let cached = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let p = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(self.verify_access_token(token)?);
                let mut m = self.verified.write().unwrap_or_else(|p| p.into_inner());
                if m.len() >= VERIFIED_CAP {
                    m.clear();
                }
                m.insert(token.to_string(), p.clone());
                p
            }
        };
        if p.expires <= now_ms() / 1000 {
            return Err("jeton expiré".into());
        }
        if self.is_revoked(&format!("j:{}", p.jti))
            || p.claim("gid")
                .is_some_and(|g| self.is_revoked(&format!("g:{g}")))
        {
            return Err("jeton révoqué".into());
        }
        Ok(p)
    }

    /// [`Provider::validate`], and a token bound to a client certificate (`cnf.x5t#S256`) only with that
    /// certificate presented on the connection (`certificate`: its thumbprint).
    pub fn validate_presented(
        &self,
        token: &str,
        certificate: Option<&str>,
    ) -> Result<Arc<Principal>, String> {
        let p = self.validate(token)?;
        if let Some(bound) = p.certificate_binding() {
            match certificate {
                Some(c) if crate::ct_eq(c.as_bytes(), bound.as_bytes()) => {}
                Some(_) => {
                    return Err("jeton lié à un autre certificat client (cnf)".into());
                }
                None => {
                    return Err(
                        "jeton lié à un certificat client : présenter ce certificat (TLS mutuel)"
                            .into(),
                    );
                }
            }
        }
        Ok(p)
    }

    fn verify_access_token(&self, token: &str) -> Result<Principal, String> {
        let jws = self.keys.verify(token).map_err(|e| e.to_string())?;
        if jws.alg != Alg::Es256 {
            return Err("jeton d'accès attendu (ES256)".into());
        }
        let c = jws.claims;
        let s = |k: &str| c.get(k).and_then(Value::as_str);
        let realm = s("iss")
            .and_then(|i| self.realm_of_issuer(i))
            .ok_or("émetteur inconnu")?;
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => *a == self.audience(),
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(&self.audience())),
            _ => false,
        };
        if !aud_ok {
            return Err("jeton destiné à un autre service (aud)".into());
        }
        let now = now_ms() / 1000;
        let exp = c
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or("jeton sans expiration")?;
        if exp <= now {
            return Err("jeton expiré".into());
        }
        if c.get("iat")
            .and_then(Value::as_i64)
            .is_some_and(|i| i > now + 60)
        {
            return Err("jeton émis dans le futur".into());
        }
        let jti = s("jti").ok_or("jeton sans jti")?.to_string();
        let scopes = Scopes::parse(s("scope").unwrap_or("")).map_err(|e| e.to_string())?;
        let client_only = c
            .get("socle_client")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Principal {
            realm: (!client_only).then_some(realm),
            subject: s("sub").ok_or("jeton sans sub")?.to_string(),
            client_id: s("client_id").unwrap_or_default().to_string(),
            scopes,
            acr: s("acr").map(str::to_string),
            jti,
            expires: exp,
            claims: c,
        })
    }

    /// Token introspection (RFC 7662) for an authenticated client of `realm`.
    pub fn introspect(
        &self,
        realm: Realm,
        form: &[(String, String)],
        auth: &ClientAuth,
    ) -> Result<Value, TokenError> {
        let endpoint = format!("{}/introspect", self.issuer(realm));
        let asker = self.authenticate_client(realm, auth, &endpoint, false)?;
        let token = form_get(form, "token")
            .ok_or_else(|| TokenError::new("invalid_request", "token absent"))?;
        if let Ok(p) = self.validate(token) {
            if p.claims.get("iss").and_then(Value::as_str) != Some(&self.issuer(realm)) {
                return Ok(json!({"active": false}));
            }
            let mut out = p.claims.clone();
            // A resource server learns what it decides with (subject, scopes, context, professions, structures),
            // not the person's civil identity: that stays with the application the token was issued to.
            if asker.client_id != p.client_id {
                for k in IDENTITY_CLAIMS {
                    out.remove(*k);
                }
            }
            out.insert("active".into(), true.into());
            out.insert("token_type".into(), "Bearer".into());
            return Ok(Value::Object(out));
        }
        let mut row = None;
        self.store.read(&mut |c| {
            row = c.query_one(
                "SELECT client_id, subject, scope, expires, state, grant_id, created FROM auth_refresh WHERE token_hash = ? AND realm = ?",
                &[token_hash(token).into(), realm.as_str().into()],
            )?;
            Ok(())
        })?;
        Ok(match row {
            // A refresh token means something to its own application only.
            Some(r)
                if text(&r, 4) == "active"
                    && text(&r, 0) == asker.client_id
                    && int(&r, 3) > now_ms()
                    && !self.is_revoked(&format!("g:{}", text(&r, 5))) =>
            {
                json!({
                    "active": true, "token_type": "refresh_token", "client_id": text(&r, 0), "sub": text(&r, 1),
                    "scope": text(&r, 2), "exp": int(&r, 3) / 1000, "iat": int(&r, 6) / 1000, "iss": self.issuer(realm),
                })
            }
            _ => json!({"active": false}),
        })
    }

    /// Token revocation (RFC 7009): a refresh token revokes its whole grant; an access token itself. Unknown
    /// tokens are not an error. A client may only revoke its own tokens.
    pub fn revoke(
        &self,
        realm: Realm,
        form: &[(String, String)],
        auth: &ClientAuth,
    ) -> Result<(), TokenError> {
        let endpoint = format!("{}/revoke", self.issuer(realm));
        let client = self.authenticate_client(realm, auth, &endpoint, true)?;
        let token = form_get(form, "token")
            .ok_or_else(|| TokenError::new("invalid_request", "token absent"))?;
        if let Ok(p) = self.validate(token) {
            if p.client_id == client.client_id {
                self.revoke_ids(&[(format!("j:{}", p.jti), (p.expires + 60) * 1000)])?;
            }
            return Ok(());
        }
        let mut grant = None;
        self.store.read(&mut |c| {
            grant = c
                .query_one(
                    "SELECT grant_id, client_id FROM auth_refresh WHERE token_hash = ? AND realm = ?",
                    &[token_hash(token).into(), realm.as_str().into()],
                )?
                .filter(|r| text(r, 1) == client.client_id)
                .map(|r| text(&r, 0));
            Ok(())
        })?;
        if let Some(g) = grant {
            self.revoke_grant(&g)?;
        }
        Ok(())
    }

    /// The userinfo claims for a valid access token of `realm` that carries `openid`.
    pub fn userinfo(
        &self,
        realm: Realm,
        token: &str,
        certificate: Option<&str>,
    ) -> Result<Value, String> {
        let p = self.validate_presented(token, certificate)?;
        if p.realm != Some(realm) {
            return Err("jeton d'un autre domaine".into());
        }
        if !p.scopes.has("openid") {
            return Err("portée openid absente".into());
        }
        let profile = self.profile(realm, &p.subject).map_err(|e| e.to_string())?;
        let mut out = Map::new();
        out.insert("sub".into(), p.subject.clone().into());
        for (k, v) in profile {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }

    /// RP-initiated logout: ends the session named by the ID token hint (signature checked, expiry not) or the
    /// cookie, and revokes the refresh tokens it produced. Returns where to send the browser, if allowed.
    pub fn logout(
        &self,
        realm: Realm,
        id_token_hint: Option<&str>,
        cookie_sid: Option<&str>,
        post_logout_redirect_uri: Option<&str>,
    ) -> Result<Option<String>, String> {
        let mut sid_hash = cookie_sid.map(token_hash);
        let mut client_id = None;
        if let Some(hint) = id_token_hint {
            let jws = self
                .keys
                .verify(hint)
                .map_err(|e| format!("id_token_hint : {e}"))?;
            if jws.claims.get("iss").and_then(Value::as_str) != Some(&self.issuer(realm)) {
                return Err("id_token_hint d'un autre émetteur".into());
            }
            if let Some(s) = jws.claims.get("sid").and_then(Value::as_str) {
                sid_hash = Some(s.to_string());
            }
            client_id = jws
                .claims
                .get("aud")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        let redirect = match post_logout_redirect_uri {
            Some(u) => {
                let cid = client_id.ok_or("post_logout_redirect_uri exige id_token_hint")?;
                let client = self
                    .client(&cid)
                    .ok()
                    .flatten()
                    .ok_or("application inconnue")?;
                if !client.post_logout_uris.iter().any(|x| x == u) {
                    return Err("post_logout_redirect_uri non enregistrée".into());
                }
                Some(u.to_string())
            }
            None => None,
        };
        if let Some(sid) = sid_hash {
            let mut grants = Vec::new();
            self.store
                .write(&mut |c| {
                    c.execute(
                        "UPDATE auth_sessions SET ended = ? WHERE sid = ? AND realm = ?",
                        &[now_ms().into(), sid.as_str().into(), realm.as_str().into()],
                    )?;
                    grants = c
                        .query(
                            "SELECT DISTINCT grant_id FROM auth_refresh WHERE sid = ? AND state = 'active'",
                            &[sid.as_str().into()],
                        )?
                        .iter()
                        .map(|r| text(r, 0))
                        .collect();
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
            for g in grants {
                self.revoke_grant(&g).map_err(|e| e.to_string())?;
            }
        }
        Ok(redirect)
    }

    /// The discovery document of `realm` (OpenID Connect Discovery 1.0, with the SMART capabilities).
    pub fn discovery(&self, realm: Realm) -> Value {
        let iss = self.issuer(realm);
        let mtls: &[&str] = if self.config.mtls {
            &["tls_client_auth", "self_signed_tls_client_auth"]
        } else {
            &[]
        };
        let methods = |base: &[&str]| -> Vec<String> {
            base.iter().chain(mtls).map(|m| m.to_string()).collect()
        };
        json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/authorize"),
            "token_endpoint": format!("{iss}/token"),
            "userinfo_endpoint": format!("{iss}/userinfo"),
            "jwks_uri": format!("{iss}/jwks"),
            "introspection_endpoint": format!("{iss}/introspect"),
            "revocation_endpoint": format!("{iss}/revoke"),
            "end_session_endpoint": format!("{iss}/logout"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": methods(&["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]),
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
            "introspection_endpoint_auth_methods_supported": methods(&["client_secret_basic", "client_secret_post", "private_key_jwt"]),
            "revocation_endpoint_auth_methods_supported": methods(&["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]),
            "tls_client_certificate_bound_access_tokens": self.config.mtls,
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": default_scope(realm, true).split(' ').chain(["system/*.rs"]).collect::<Vec<_>>(),
            "claims_supported": match realm {
                Realm::Pro => vec!["sub", "idnps", "rpps", "given_name", "family_name", "profession", "specialty", "structures", "fhirUser", "acr", "amr", "auth_time"],
                Realm::Patient => vec!["sub", "ins", "given_name", "family_name", "patient", "fhirUser", "acr", "amr", "auth_time"],
            },
            "acr_values_supported": [ACR_ONE_FACTOR, ACR_TWO_FACTORS],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "ui_locales_supported": ["fr-FR"],
            "capabilities": ["launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric", "sso-openid-connect", "context-standalone-patient", "permission-patient", "permission-user", "permission-offline", "permission-v2"],
        })
    }
}

struct Grant {
    id: String,
    realm: Realm,
    client_id: String,
    subject: String,
    scope: String,
    acr: Option<String>,
    amr: Vec<String>,
    auth_time: Option<i64>,
    sid: Option<String>,
    /// The client certificate's thumbprint the access token is bound to (`cnf.x5t#S256`).
    cnf: Option<String>,
}
