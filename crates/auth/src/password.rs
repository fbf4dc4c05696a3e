//! Password hashing with Argon2id (PHC string format, a fresh salt per hash).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::AuthError;

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 256;

/// Refuses passwords too short or too long, with the reason.
pub fn check_policy(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AuthError::Invalid(format!(
            "mot de passe trop court : {MIN_LEN} caractères au moins"
        )));
    }
    if password.len() > MAX_LEN {
        return Err(AuthError::Invalid(format!(
            "mot de passe trop long : {MAX_LEN} octets au plus"
        )));
    }
    Ok(())
}

pub fn hash(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hachage du mot de passe : {e}")))
}

/// Whether `password` matches the stored PHC string (false on a damaged hash).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of nothing, verified when the login is unknown so that the answer takes as long as for a real one.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("socle-dummy-password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("x", "not a hash"));
        assert!(check_policy("court").is_err());
    }
}
