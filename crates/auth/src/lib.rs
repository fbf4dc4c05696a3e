//! Socle's OpenID Connect provider, as a domain library (no HTTP): two realms — `pro` (the Pro Santé Connect
//! role: professionals of the Annuaire) and `patient` (the Mon Espace Santé / FranceConnect role: persons bound
//! to their INS) —, accounts with Argon2id passwords and TOTP, registered clients, authorization codes with
//! PKCE, rotating refresh tokens, JWT access and ID tokens signed with rotating keys, introspection,
//! revocation, sessions and logout. The server crate maps HTTP onto [`Provider`].

pub mod jose;
pub mod keys;
pub mod mtls;
pub mod password;
mod provider;
pub mod scopes;
pub mod seal;
mod tables;
pub mod totp;

pub use provider::{
    AccountInfo, AuthResult, AuthorizeError, AuthorizeRequest, ClientAuth, ClientInfo, LoginError,
    LoginStep, NewClient, Principal, ProfileSource, Provider, ProviderConfig, Represented,
    TokenError,
};
pub use scopes::{Context, Perm, Scope, Scopes};

use ring::rand::SecureRandom;
use socle_store::StoreError;

/// Assurance levels carried in `acr` (the values Pro Santé Connect uses): one factor, two factors.
pub const ACR_ONE_FACTOR: &str = "eidas1";
pub const ACR_TWO_FACTORS: &str = "eidas2";

/// Rank of an `acr` value (unknown values rank lowest).
pub fn acr_rank(acr: &str) -> u8 {
    match acr {
        ACR_TWO_FACTORS => 2,
        ACR_ONE_FACTOR => 1,
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Realm {
    Pro,
    Patient,
}

impl Realm {
    pub fn as_str(self) -> &'static str {
        match self {
            Realm::Pro => "pro",
            Realm::Patient => "patient",
        }
    }

    pub fn parse(s: &str) -> Option<Realm> {
        match s {
            "pro" => Some(Realm::Pro),
            "patient" => Some(Realm::Patient),
            _ => None,
        }
    }

    pub fn all() -> [Realm; 2] {
        [Realm::Pro, Realm::Patient]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad administrative input (the message says what).
    #[error("{0}")]
    Invalid(String),
    /// Unknown account, client…
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("erreur interne : {0}")]
    Internal(String),
    #[error(transparent)]
    Store(StoreError),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // The system generator failing is not recoverable: no token may be issued without it.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        panic!("générateur aléatoire du système indisponible");
    }
    b
}

/// `n` random bytes, base64url: identifiers, codes, secrets.
pub fn random_token(n: usize) -> String {
    jose::b64(&random_bytes(n))
}

/// SHA-256, base64url: how codes, refresh tokens and client secrets are stored (they are random and long, so
/// a fast hash is enough; passwords use Argon2id).
pub fn token_hash(token: &str) -> String {
    jose::b64(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Compares two secrets without an early exit on the first differing byte (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A PKCE S256 challenge of `verifier` (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    jose::b64(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), for the establishment networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("réseau invalide : « {s} » (attendu 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("préfixe invalide dans « {s} »"))?
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("x/8".parse::<Network>().is_err());
    }

    #[test]
    fn pkce_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
