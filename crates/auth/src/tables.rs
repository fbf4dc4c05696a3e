//! The provider's tables, in the same database as the FHIR store (SQLite or PostgreSQL: portable SQL only).
//! Codes, refresh tokens and client secrets are stored as SHA-256 hashes, passwords as Argon2id hashes.

use socle_store::{Store, StoreError};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS auth_accounts (realm TEXT NOT NULL, login TEXT NOT NULL, subject TEXT NOT NULL, \
     password_hash TEXT, totp_secret TEXT, totp_last_step BIGINT, failures BIGINT NOT NULL DEFAULT 0, \
     locked_until BIGINT NOT NULL DEFAULT 0, activation_hash TEXT, activation_expires BIGINT, \
     status TEXT NOT NULL, profile TEXT NOT NULL, created BIGINT NOT NULL, PRIMARY KEY (realm, login))",
    "CREATE UNIQUE INDEX IF NOT EXISTS auth_accounts_subject ON auth_accounts (realm, subject)",
    "CREATE TABLE IF NOT EXISTS auth_clients (client_id TEXT PRIMARY KEY, realm TEXT NOT NULL, name TEXT NOT NULL, \
     auth_method TEXT NOT NULL, secret_hash TEXT, jwks TEXT, redirect_uris TEXT NOT NULL, \
     post_logout_uris TEXT NOT NULL, scope TEXT NOT NULL, created BIGINT NOT NULL, disabled BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS auth_codes (code_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, realm TEXT NOT NULL, \
     client_id TEXT NOT NULL, subject TEXT NOT NULL, redirect_uri TEXT NOT NULL, scope TEXT NOT NULL, \
     nonce TEXT, challenge TEXT NOT NULL, acr TEXT NOT NULL, amr TEXT NOT NULL, auth_time BIGINT NOT NULL, \
     sid TEXT NOT NULL, expires BIGINT NOT NULL, used BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS auth_refresh (token_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, realm TEXT NOT NULL, \
     client_id TEXT NOT NULL, subject TEXT NOT NULL, scope TEXT NOT NULL, acr TEXT, amr TEXT, auth_time BIGINT, \
     sid TEXT, expires BIGINT NOT NULL, state TEXT NOT NULL, created BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS auth_refresh_grant ON auth_refresh (grant_id)",
    "CREATE INDEX IF NOT EXISTS auth_refresh_sid ON auth_refresh (sid)",
    "CREATE TABLE IF NOT EXISTS auth_sessions (sid TEXT PRIMARY KEY, realm TEXT NOT NULL, subject TEXT NOT NULL, \
     acr TEXT NOT NULL, amr TEXT NOT NULL, auth_time BIGINT NOT NULL, expires BIGINT NOT NULL, ended BIGINT)",
    "CREATE TABLE IF NOT EXISTS auth_pending (id_hash TEXT PRIMARY KEY, realm TEXT NOT NULL, login TEXT NOT NULL, \
     request TEXT NOT NULL, expires BIGINT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS auth_revoked (id TEXT PRIMARY KEY, kind TEXT NOT NULL, expires BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS auth_assertions (jti TEXT PRIMARY KEY, expires BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS auth_consents (realm TEXT NOT NULL, subject TEXT NOT NULL, client_id TEXT NOT NULL, \
     scope TEXT NOT NULL, granted BIGINT NOT NULL, revoked BIGINT, PRIMARY KEY (realm, subject, client_id))",
    // Legal representatives: the persons a patient-realm account acts for (besides its holder).
    "CREATE TABLE IF NOT EXISTS auth_representations (realm TEXT NOT NULL, subject TEXT NOT NULL, patient TEXT NOT NULL, \
     ins TEXT NOT NULL, name TEXT NOT NULL, since BIGINT NOT NULL, PRIMARY KEY (realm, subject, patient))",
    // The person a grant acts for, when its holder chose to act as a legal representative.
    "CREATE TABLE IF NOT EXISTS auth_grant_context (grant_id TEXT PRIMARY KEY, subject TEXT NOT NULL, \
     patient TEXT NOT NULL, created BIGINT NOT NULL)",
];

pub fn create(store: &dyn Store) -> Result<(), StoreError> {
    store.write(&mut |c| {
        for s in SCHEMA {
            c.execute(s, &[])?;
        }
        Ok(())
    })
}
