//! The provider's signing keys: one RS256 key (ID tokens: the OpenID Connect default every relying party
//! accepts) and one ES256 key (access tokens: fast to sign and verify) are current at a time. Rotation adds a
//! new pair that becomes current; the previous keys stay published in the JWKS for `RETIRED_KEPT_MS` so that
//! tokens they signed still verify, then disappear. Keys live in the database (`auth_keys`), so every node of a
//! deployment signs with the same keys; the private parts never leave it except into memory, and are sealed
//! there under the secrets key when the provider has one ([`crate::seal`]).

use std::sync::{Arc, RwLock};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use socle_store::{SqlValue, Store, StoreError};

use crate::jose::{self, Alg, JoseError, KeyMaterial, PublicJwk};
use crate::seal::{self, Sealer};
use crate::{AuthError, random_token};

/// How long a rotated-out key stays published (longer than any token it signed lives).
pub const RETIRED_KEPT_MS: i64 = 24 * 3600 * 1000;

enum Private {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Key {
    kid: String,
    public: PublicJwk,
    private: Private,
    created: i64,
    /// When it stopped being current (`None`: current).
    retired: Option<i64>,
}

pub struct KeyRing {
    store: Arc<dyn Store>,
    keys: RwLock<Vec<Arc<Key>>>,
    rng: SystemRandom,
    sealer: Option<Arc<Sealer>>,
}

/// Where a key's private part is stored (the sealed value's additional data).
fn place(kid: &str) -> String {
    format!("auth_keys/{kid}")
}

fn load_private(alg: Alg, der: &[u8], rng: &SystemRandom) -> Result<Private, AuthError> {
    Ok(match alg {
        Alg::Rs256 => Private::Rsa(
            RsaKeyPair::from_pkcs8(der)
                .map_err(|_| AuthError::Internal("clé RSA illisible".into()))?,
        ),
        Alg::Es256 => Private::Ec(
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, rng)
                .map_err(|_| AuthError::Internal("clé EC illisible".into()))?,
        ),
    })
}

fn generate(alg: Alg, rng: &SystemRandom) -> Result<(Vec<u8>, KeyMaterial), AuthError> {
    match alg {
        Alg::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| AuthError::Internal(format!("génération RSA : {e}")))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| AuthError::Internal(format!("encodage RSA : {e}")))?;
            let material = KeyMaterial::Rsa {
                n: key.n().to_bytes_be(),
                e: key.e().to_bytes_be(),
            };
            Ok((der.as_bytes().to_vec(), material))
        }
        Alg::Es256 => {
            let doc =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng)
                    .map_err(|_| AuthError::Internal("génération EC".into()))?;
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                doc.as_ref(),
                rng,
            )
            .map_err(|_| AuthError::Internal("génération EC".into()))?;
            let point = pair.public_key().as_ref().to_vec();
            Ok((doc.as_ref().to_vec(), KeyMaterial::P256 { point }))
        }
    }
}

impl KeyRing {
    /// Creates the table if needed and loads the keys still published. Missing current keys are created
    /// lazily, on first use (an RSA key takes a moment to generate).
    pub fn open(store: Arc<dyn Store>) -> Result<KeyRing, AuthError> {
        Self::open_sealed(store, None)
    }

    /// [`KeyRing::open`], with private parts sealed under `sealer`; a sealed one that does not open (another
    /// key), or a plain one, stops the opening.
    pub fn open_sealed(
        store: Arc<dyn Store>,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<KeyRing, AuthError> {
        Self::open_with(store, sealer, false)
    }

    /// [`KeyRing::open_sealed`]; with `migrate`, the private parts stored in plain text are sealed first (the
    /// store's one-time migration, see [`seal::migrated`]).
    pub(crate) fn open_with(
        store: Arc<dyn Store>,
        sealer: Option<Arc<Sealer>>,
        migrate: bool,
    ) -> Result<KeyRing, AuthError> {
        store.write(&mut |c| {
            c.execute(
                "CREATE TABLE IF NOT EXISTS auth_keys (kid TEXT PRIMARY KEY, alg TEXT NOT NULL, \
                 private_der TEXT NOT NULL, public_jwk TEXT NOT NULL, created BIGINT NOT NULL, retired BIGINT)",
                &[],
            )?;
            Ok(())
        })?;
        let ring = KeyRing {
            store,
            keys: RwLock::new(Vec::new()),
            rng: SystemRandom::new(),
            sealer,
        };
        if migrate {
            ring.seal_plain()?;
        }
        ring.reload()?;
        Ok(ring)
    }

    /// Seals the private parts stored in plain text (keys written before the provider had a secrets key).
    fn seal_plain(&self) -> Result<(), AuthError> {
        let Some(sealer) = self.sealer.as_deref() else {
            return Ok(());
        };
        let mut plain = Vec::new();
        self.store.read(&mut |c| {
            plain = c.query(
                "SELECT kid, private_der FROM auth_keys WHERE private_der NOT LIKE 'sealed1:%'",
                &[],
            )?;
            Ok(())
        })?;
        for r in plain {
            let field = |i: usize| r.get(i).and_then(|v| v.as_str()).unwrap_or_default();
            let (kid, der) = (field(0), field(1));
            let sealed = sealer.seal(&place(kid), der.as_bytes())?;
            self.store.write(&mut |c| {
                c.execute(
                    "UPDATE auth_keys SET private_der = ? WHERE kid = ? AND private_der = ?",
                    &[sealed.as_str().into(), kid.into(), der.into()],
                )?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Re-reads the keys from the database (after a rotation by another process).
    pub fn reload(&self) -> Result<(), AuthError> {
        let keys = self.load(
            "retired IS NULL OR retired > ?",
            (crate::now_ms() - RETIRED_KEPT_MS).into(),
        )?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    fn load(&self, filter: &str, param: SqlValue) -> Result<Vec<Arc<Key>>, AuthError> {
        let mut rows = Vec::new();
        let sql = format!(
            "SELECT kid, alg, private_der, public_jwk, created, retired FROM auth_keys WHERE {filter} ORDER BY created"
        );
        self.store.read(&mut |c| {
            rows = c.query(&sql, std::slice::from_ref(&param))?;
            Ok(())
        })?;
        let mut keys = Vec::new();
        for r in rows {
            let text = |i: usize| {
                r.get(i)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let kid = text(0);
            let Some(alg) = Alg::parse(&text(1)) else {
                continue;
            };
            let der = seal::reveal(self.sealer.as_deref(), &place(&kid), &text(2))?;
            let der = jose::unb64(&der)
                .ok_or_else(|| AuthError::Internal(format!("clé {kid} illisible")))?;
            let public = serde_json::from_str::<Value>(&text(3))
                .ok()
                .and_then(|v| PublicJwk::from_json(&v).ok())
                .ok_or_else(|| AuthError::Internal(format!("clé publique {kid} illisible")))?;
            keys.push(Arc::new(Key {
                kid,
                public,
                private: load_private(alg, &der, &self.rng)?,
                created: r.get(4).and_then(|v| v.as_i64()).unwrap_or(0),
                retired: r.get(5).and_then(|v| v.as_i64()),
            }));
        }
        Ok(keys)
    }

    fn current(&self, alg: Alg) -> Result<Arc<Key>, AuthError> {
        let find = |keys: &[Arc<Key>]| {
            keys.iter()
                .rev()
                .find(|k| k.public.alg == alg && k.retired.is_none())
                .cloned()
        };
        if let Some(k) = find(&self.keys.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(k);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = find(&keys) {
            return Ok(k);
        }
        let key = self.create(alg, false)?;
        keys.push(key.clone());
        Ok(key)
    }

    /// Generates and stores a key of `alg`; with `retire_others`, the current keys of that algorithm stop
    /// being current (rotation). Another process may have created one meanwhile: then that one is used.
    fn create(&self, alg: Alg, retire_others: bool) -> Result<Arc<Key>, AuthError> {
        let (der, material) = generate(alg, &self.rng)?;
        let kid = random_token(12);
        let public = PublicJwk {
            kid: Some(kid.clone()),
            alg,
            material,
        };
        let now = crate::now_ms();
        let der_text = seal::conceal(self.sealer.as_deref(), &place(&kid), &jose::b64(&der))?;
        let jwk_text = public.to_json().to_string();
        let mut existing: Option<String> = None;
        self.store.write(&mut |c| {
            existing = None;
            if retire_others {
                c.execute(
                    "UPDATE auth_keys SET retired = ? WHERE alg = ? AND retired IS NULL",
                    &[now.into(), alg.as_str().into()],
                )?;
            } else if let Some(r) = c.query_one(
                "SELECT kid FROM auth_keys WHERE alg = ? AND retired IS NULL ORDER BY created DESC LIMIT 1",
                &[alg.as_str().into()],
            )? {
                existing = r.first().and_then(|v| v.as_str()).map(str::to_string);
                return Ok(());
            }
            c.execute(
                "INSERT INTO auth_keys (kid, alg, private_der, public_jwk, created, retired) VALUES (?, ?, ?, ?, ?, NULL)",
                &[
                    kid.as_str().into(),
                    alg.as_str().into(),
                    der_text.as_str().into(),
                    jwk_text.as_str().into(),
                    now.into(),
                ],
            )?;
            Ok(())
        })?;
        if let Some(kid) = existing {
            // Created by another process since our last load: use that one.
            return self
                .load("kid = ?", kid.as_str().into())?
                .pop()
                .ok_or_else(|| AuthError::Internal("clé courante introuvable".into()));
        }
        tracing::info!(kid = %kid, alg = alg.as_str(), "nouvelle clé de signature");
        Ok(Arc::new(Key {
            kid,
            public,
            private: load_private(alg, &der, &self.rng)?,
            created: now,
            retired: None,
        }))
    }

    fn snapshot(&self) -> Vec<Arc<Key>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes new current keys (both algorithms); the old ones stay published for `RETIRED_KEPT_MS`.
    pub fn rotate(&self) -> Result<Vec<String>, AuthError> {
        let mut made = Vec::new();
        for alg in [Alg::Rs256, Alg::Es256] {
            made.push(self.create(alg, true)?.kid.clone());
        }
        self.reload()?;
        Ok(made)
    }

    /// Signs `claims` as a JWT with the current key of `alg`.
    pub fn sign(&self, alg: Alg, claims: &Value) -> Result<String, AuthError> {
        let key = self.current(alg)?;
        let input = jose::signing_input(alg, &key.kid, claims);
        let sig = match &key.private {
            Private::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| AuthError::Internal("signature RSA".into()))?;
                sig
            }
            Private::Ec(k) => k
                .sign(&self.rng, input.as_bytes())
                .map_err(|_| AuthError::Internal("signature EC".into()))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", jose::b64(&sig)))
    }

    /// The public keys, current and recently rotated out, for verification.
    pub fn public_keys(&self) -> Vec<PublicJwk> {
        self.snapshot().iter().map(|k| k.public.clone()).collect()
    }

    /// The JWKS document. Creates the current keys first, so that relying parties see them before the first
    /// token.
    pub fn jwks(&self) -> Result<Value, AuthError> {
        self.current(Alg::Rs256)?;
        self.current(Alg::Es256)?;
        let keys: Vec<Value> = self.public_keys().iter().map(PublicJwk::to_json).collect();
        Ok(json!({ "keys": keys }))
    }

    /// Verifies a JWT signed by one of our keys, from memory only (no database access: callers may be on an
    /// async thread). Keys rotated by another node arrive with the provider's periodic reload.
    pub fn verify(&self, token: &str) -> Result<jose::Jws, JoseError> {
        let jws = jose::Jws::decode(token)?;
        jws.verify(&self.public_keys())?;
        Ok(jws)
    }

    /// When each published key was created and, if rotated out, when (for `socle keys list`).
    pub fn describe(&self) -> Vec<(String, &'static str, i64, Option<i64>)> {
        self.snapshot()
            .iter()
            .map(|k| (k.kid.clone(), k.public.alg.as_str(), k.created, k.retired))
            .collect()
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Store(e)
    }
}
