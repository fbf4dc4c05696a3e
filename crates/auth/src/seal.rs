//! Secrets at rest: the provider's private signing keys and the TOTP seeds are stored encrypted
//! (AES-256-GCM) under a key kept outside the database — a file next to the data, or wherever the operator
//! puts it (`--secrets-key`). A copy of the database alone (a backup, a dump, a replica) then gives neither the
//! means to sign tokens nor the second factors of the accounts.
//!
//! A sealed value is `sealed1:` followed by the base64url of a 96-bit random nonce, the ciphertext and the
//! tag; the additional data is the value's place (`auth_keys/<kid>`, `totp/<realm>/<login>`), so that a sealed
//! value copied to another row does not open. Values written before sealing existed are plain text: they are
//! read as such, and [`crate::Provider::open`] seals them.

use std::io::Write;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::AuthError;
use crate::jose;

/// The prefix of a sealed value.
pub const SEALED: &str = "sealed1:";

/// The key that seals and opens the provider's secrets.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer over 32 key bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Sealer {
        // A 32-byte key is always accepted by AES-256-GCM.
        let key = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// Reads the key file (64 hexadecimal digits), or creates it — owner-only — when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Sealer, AuthError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(AuthError::Internal(format!(
                "clé de chiffrement des secrets {} illisible : {e}",
                path.display()
            ))),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Sealer, AuthError> {
        let hex = text.trim();
        let bytes: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(k) => Ok(Sealer::from_bytes(&k)),
            None => Err(AuthError::Invalid(format!(
                "clé de chiffrement des secrets {} : 64 chiffres hexadécimaux attendus (32 octets)",
                path.display()
            ))),
        }
    }

    fn create(path: &Path) -> Result<Sealer, AuthError> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| AuthError::Internal("aléa indisponible".into()))?;
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        let fail = |e: std::io::Error| {
            AuthError::Internal(format!(
                "clé de chiffrement des secrets {} : création impossible : {e}",
                path.display()
            ))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(mut f) => {
                f.write_all(format!("{hex}\n").as_bytes()).map_err(fail)?;
                f.sync_all().map_err(fail)?;
                Ok(Sealer::from_bytes(&k))
            }
            // Another process created it meanwhile: that one is the key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(fail)?;
                Self::parse(path, &text)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Seals `plain`, bound to its place `context`.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, AuthError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| AuthError::Internal("aléa indisponible".into()))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| AuthError::Internal("chiffrement impossible".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED}{}", jose::b64(&out)))
    }

    /// Opens a sealed value of place `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, AuthError> {
        let wrong = || {
            AuthError::Internal(format!(
                "secret {context} indéchiffrable : la clé de chiffrement des secrets (--secrets-key) n'est pas \
                 celle qui l'a chiffré"
            ))
        };
        let raw = sealed
            .strip_prefix(SEALED)
            .and_then(jose::unb64)
            .ok_or_else(wrong)?;
        if raw.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }
}

/// Whether a stored value is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED)
}

/// The stored form of a secret: sealed when there is a sealer, as is otherwise.
pub fn conceal(sealer: Option<&Sealer>, context: &str, plain: &str) -> Result<String, AuthError> {
    match sealer {
        Some(s) => s.seal(context, plain.as_bytes()),
        None => Ok(plain.to_string()),
    }
}

/// A secret from its stored form: sealed, or — without a sealer only — plain text. With a sealer a plain value
/// is refused: once the secrets are sealed, one found in plain text was written by someone without the key
/// (a planted signing key, a known TOTP seed); the one-time migration of a store's plain secrets seals them
/// before they are read ([`migrated`]).
pub fn reveal(sealer: Option<&Sealer>, context: &str, stored: &str) -> Result<String, AuthError> {
    if !is_sealed(stored) {
        if sealer.is_some() {
            return Err(AuthError::Internal(format!(
                "secret {context} en clair alors que les secrets sont chiffrés : valeur refusée (écrite sans la clé)"
            )));
        }
        return Ok(stored.to_string());
    }
    let Some(s) = sealer else {
        return Err(AuthError::Internal(format!(
            "secret {context} chiffré, mais aucune clé de chiffrement des secrets n'est configurée (--secrets-key)"
        )));
    };
    String::from_utf8(s.open(context, stored)?)
        .map_err(|_| AuthError::Internal(format!("secret {context} illisible")))
}

/// Whether this store's plain secrets were sealed once (then a plain value is never sealed again, see
/// [`reveal`]).
pub fn migrated(store: &dyn socle_store::Store) -> Result<bool, AuthError> {
    store.write(&mut |c| {
        c.execute(
            "CREATE TABLE IF NOT EXISTS auth_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            &[],
        )?;
        Ok(())
    })?;
    let mut found = false;
    store.read(&mut |c| {
        found = c
            .query_one(
                "SELECT value FROM auth_meta WHERE name = 'secrets-sealed'",
                &[],
            )?
            .is_some();
        Ok(())
    })?;
    Ok(found)
}

/// Records that the store's plain secrets are sealed.
pub fn mark_migrated(store: &dyn socle_store::Store) -> Result<(), AuthError> {
    store.write(&mut |c| {
        if c.query_one("SELECT 1 FROM auth_meta WHERE name = 'secrets-sealed'", &[])?
            .is_none()
        {
            c.execute(
                "INSERT INTO auth_meta (name, value) VALUES ('secrets-sealed', 'v1')",
                &[],
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_their_key() {
        let a = Sealer::from_bytes(&[7; 32]);
        let b = Sealer::from_bytes(&[8; 32]);
        let s = a.seal("auth_keys/k1", b"secret").unwrap();
        assert!(is_sealed(&s) && !s.contains("secret"));
        assert_eq!(a.open("auth_keys/k1", &s).unwrap(), b"secret");
        assert!(a.open("auth_keys/k2", &s).is_err());
        assert!(b.open("auth_keys/k1", &s).is_err());
        // Two seals of the same value differ (random nonces).
        assert_ne!(s, a.seal("auth_keys/k1", b"secret").unwrap());
        // Plain text reads as is without a key (before sealing); with one it is refused (planted). A sealed
        // value without a key does not read.
        assert_eq!(reveal(None, "x", "JBSWY3DP").unwrap(), "JBSWY3DP");
        assert!(reveal(Some(&a), "x", "JBSWY3DP").is_err());
        assert!(reveal(None, "auth_keys/k1", &s).is_err());
        for bad in ["sealed1:", "sealed1:AAAA", "sealed1:!!", &s[..s.len() - 2]] {
            assert!(a.open("auth_keys/k1", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_file_is_created_once_owner_only() {
        let dir = std::env::temp_dir().join(format!("socle-seal-{}", crate::random_token(8)));
        let path = dir.join("secrets.key");
        let first = Sealer::load_or_create(&path).unwrap();
        let sealed = first.seal("c", b"v").unwrap();
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open("c", &sealed).unwrap(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "pas une clé").unwrap();
        assert!(Sealer::load_or_create(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
