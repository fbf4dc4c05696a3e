//! Compact JWS (RFC 7515) as JWTs use it, with the two algorithms Socle signs and accepts: RS256
//! (RSASSA-PKCS1-v1_5 with SHA-256, the OpenID Connect default) and ES256 (ECDSA P-256 with SHA-256).
//! `none`, HMAC algorithms and anything else are refused. Public keys travel as JWKs (RFC 7517).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde_json::{Map, Value, json};

/// Longest token accepted (tokens and client assertions are a few hundred bytes to a few KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("jeton trop long")]
    TooLong,
    #[error("jeton mal formé : {0}")]
    Malformed(&'static str),
    #[error("algorithme de signature refusé : {0}")]
    Algorithm(String),
    #[error("clé de signature inconnue")]
    UnknownKey,
    #[error("signature invalide")]
    BadSignature,
    #[error("clé JWK invalide : {0}")]
    BadKey(&'static str),
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// A public key as published in a JWKS: RSA (`n`, `e`) or EC P-256 (`x`, `y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    pub kid: Option<String>,
    pub alg: Alg,
    pub material: KeyMaterial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`.
    P256 {
        point: Vec<u8>,
    },
}

impl PublicJwk {
    /// Reads one JWK. The algorithm is the key's `alg`, else deduced from `kty`/`crv`.
    pub fn from_json(v: &Value) -> Result<PublicJwk, JoseError> {
        let field = |k: &'static str| -> Result<Vec<u8>, JoseError> {
            v.get(k)
                .and_then(Value::as_str)
                .and_then(unb64)
                .filter(|b| !b.is_empty())
                .ok_or(JoseError::BadKey(k))
        };
        let kid = v.get("kid").and_then(Value::as_str).map(str::to_string);
        let (alg, material) = match v.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                let n = field("n")?;
                if n.len() < 256 {
                    return Err(JoseError::BadKey("n (RSA de moins de 2048 bits)"));
                }
                (Alg::Rs256, KeyMaterial::Rsa { n, e: field("e")? })
            }
            Some("EC") => {
                if v.get("crv").and_then(Value::as_str) != Some("P-256") {
                    return Err(JoseError::BadKey("crv (seule P-256 est acceptée)"));
                }
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JoseError::BadKey("x/y"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend(x);
                point.extend(y);
                (Alg::Es256, KeyMaterial::P256 { point })
            }
            _ => return Err(JoseError::BadKey("kty")),
        };
        if let Some(a) = v.get("alg").and_then(Value::as_str)
            && Alg::parse(a) != Some(alg)
        {
            return Err(JoseError::Algorithm(a.to_string()));
        }
        Ok(PublicJwk { kid, alg, material })
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        match &self.material {
            KeyMaterial::Rsa { n, e } => {
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), b64(n).into());
                m.insert("e".into(), b64(e).into());
            }
            KeyMaterial::P256 { point } => {
                m.insert("kty".into(), "EC".into());
                m.insert("crv".into(), "P-256".into());
                m.insert("x".into(), b64(&point[1..33]).into());
                m.insert("y".into(), b64(&point[33..65]).into());
            }
        }
        m.insert("use".into(), "sig".into());
        m.insert("alg".into(), self.alg.as_str().into());
        if let Some(k) = &self.kid {
            m.insert("kid".into(), k.clone().into());
        }
        Value::Object(m)
    }

    /// Checks `sig` over `input` with this key.
    pub fn verify(&self, input: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        let ok = match &self.material {
            KeyMaterial::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
                .is_ok(),
            KeyMaterial::P256 { point } => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input, sig)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(JoseError::BadSignature)
        }
    }
}

/// A decoded, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    pub alg: Alg,
    pub kid: Option<String>,
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jws {
    /// Parses `header.payload.signature`; refuses unknown algorithms (`none`, `HS256`…) and anything that is
    /// not three base64url parts with JSON objects in the first two.
    pub fn decode(token: &str) -> Result<Jws, JoseError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JoseError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed("trois parties attendues"));
        };
        let object = |part: &str, what: &'static str| -> Result<Map<String, Value>, JoseError> {
            let bytes = unb64(part).ok_or(JoseError::Malformed(what))?;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(JoseError::Malformed(what)),
            }
        };
        let header = object(h, "en-tête")?;
        let claims = object(p, "contenu")?;
        let signature = unb64(s).ok_or(JoseError::Malformed("signature"))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JoseError::Malformed("alg absent"))?;
        let alg = Alg::parse(alg_name).ok_or_else(|| JoseError::Algorithm(alg_name.to_string()))?;
        if header.contains_key("crit") {
            return Err(JoseError::Malformed("en-tête crit non pris en charge"));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Jws {
            alg,
            kid,
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature,
        })
    }

    /// Verifies the signature with the key of `keys` that the header names (by `kid`, else the only key of the
    /// header's algorithm).
    pub fn verify(&self, keys: &[PublicJwk]) -> Result<(), JoseError> {
        let mut candidates = keys.iter().filter(|k| k.alg == self.alg);
        let key = match &self.kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None => {
                let first = candidates.next();
                if candidates.next().is_some() {
                    return Err(JoseError::UnknownKey);
                }
                first
            }
        }
        .ok_or(JoseError::UnknownKey)?;
        key.verify(self.signing_input.as_bytes(), &self.signature)
    }
}

/// The signing input of a JWT with this header and these claims (`b64(header).b64(claims)`).
pub fn signing_input(alg: Alg, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg.as_str(), "typ": "JWT", "kid": kid});
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_none_and_hmac() {
        for alg in ["none", "HS256", "RS512", "ES384"] {
            let h = b64(json!({"alg": alg}).to_string().as_bytes());
            let p = b64(b"{}");
            let e = Jws::decode(&format!("{h}.{p}.")).unwrap_err();
            assert_eq!(e, JoseError::Algorithm(alg.into()), "{alg}");
        }
    }

    #[test]
    fn malformed() {
        for t in [
            "", "a", "a.b", "a.b.c.d", "!!.e30.", "e30.!!.", "W10.e30.", "e30.e30.",
        ] {
            assert!(Jws::decode(t).is_err(), "{t}");
        }
    }
}
