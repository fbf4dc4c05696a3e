//! National identifiers of the *Annuaire Santé*: RPPS (professionals, 11 digits) and FINESS (structures,
//! 9 characters), both ending with a Luhn check digit; IDNPS and IDNST, the national identifiers that prefix
//! them with their type (`8` + RPPS, `0` + ADELI; `1` + FINESS, `3` + SIRET…).

use std::fmt;

/// Identifier systems (ANS *Annuaire* FHIR guide).
pub const SYSTEM_RPPS: &str = "https://rpps.esante.gouv.fr";
pub const SYSTEM_IDNPS: &str = "urn:oid:1.2.250.1.71.4.2.1";
pub const SYSTEM_FINESS: &str = "https://finess.esante.gouv.fr";
pub const SYSTEM_IDNST: &str = "urn:oid:1.2.250.1.71.4.2.2";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("numéro RPPS {0:?} : 11 chiffres attendus")]
    RppsFormat(String),
    #[error("numéro RPPS {0:?} : chiffre de contrôle (Luhn) incorrect")]
    RppsKey(String),
    #[error("numéro FINESS {0:?} : 9 caractères attendus (département puis chiffres)")]
    FinessFormat(String),
    #[error("numéro FINESS {0:?} : chiffre de contrôle (Luhn) incorrect")]
    FinessKey(String),
    #[error(
        "identifiant national {0:?} : type et numéro attendus (8 + RPPS, 0 + ADELI, 1 + FINESS, 3 + SIRET…)"
    )]
    National(String),
}

/// Luhn checksum over ASCII digits: `true` when the last digit is the check digit of the others.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    luhn_sum(digits).is_multiple_of(10)
}

fn luhn_sum(digits: &[u8]) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = (d - b'0') as u32;
            if i % 2 == 1 {
                let x = v * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                v
            }
        })
        .sum()
}

/// The check digit to append to `body` (ASCII digits) so that the whole passes Luhn.
pub fn luhn_digit(body: &[u8]) -> u8 {
    let mut with0 = body.to_vec();
    with0.push(b'0');
    ((10 - luhn_sum(&with0) % 10) % 10) as u8
}

/// A RPPS number (11 digits, Luhn).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rpps(String);

impl Rpps {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let t = s.trim();
        if t.len() != 11 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::RppsFormat(s.into()));
        }
        if !luhn_valid(t.as_bytes()) {
            return Err(IdError::RppsKey(s.into()));
        }
        Ok(Rpps(t.into()))
    }
    /// Builds a valid number from its first 10 digits.
    pub fn from_body(n: u64) -> Rpps {
        let body = format!("{:010}", n % 10_000_000_000);
        let k = luhn_digit(body.as_bytes());
        Rpps(format!("{body}{k}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The IDNPS: `8` + RPPS.
    pub fn idnps(&self) -> String {
        format!("8{}", self.0)
    }
}

impl fmt::Display for Rpps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A FINESS number: 2-character département (`01`…`95`, `2A`, `2B`, `97`…), 6 digits, Luhn check digit.
/// For Corsica the letters count as `0` in the checksum (our reading of the format; `2A`/`2B` numbers are
/// otherwise validated like the others).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finess(String);

impl Finess {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let t = s.trim().to_ascii_uppercase();
        let b = t.as_bytes();
        let corsica = b.len() == 9 && b[0] == b'2' && (b[1] == b'A' || b[1] == b'B');
        if b.len() != 9
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || (i == 1 && corsica))
        {
            return Err(IdError::FinessFormat(s.into()));
        }
        let mut digits = b.to_vec();
        if corsica {
            digits[1] = b'0';
        }
        if !luhn_valid(&digits) {
            return Err(IdError::FinessKey(s.into()));
        }
        Ok(Finess(t))
    }
    /// Builds a valid number from a département code and a 6-digit serial.
    pub fn build(dept: &str, serial: u32) -> Option<Finess> {
        if dept.len() != 2 {
            return None;
        }
        let body = format!("{dept}{:06}", serial % 1_000_000);
        let digits: Vec<u8> = body
            .bytes()
            .map(|c| if c.is_ascii_digit() { c } else { b'0' })
            .collect();
        let k = luhn_digit(&digits);
        Finess::parse(&format!("{body}{k}")).ok()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The IDNST: `1` + FINESS.
    pub fn idnst(&self) -> String {
        format!("1{}", self.0)
    }
}

impl fmt::Display for Finess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an IDNPS (`8` + RPPS checked; `0` + ADELI: 9 characters, not checked further).
pub fn check_idnps(s: &str) -> Result<(), IdError> {
    match s.as_bytes().first() {
        Some(b'8') => Rpps::parse(&s[1..]).map(|_| ()),
        Some(b'0') if s.len() == 10 => Ok(()),
        _ => Err(IdError::National(s.into())),
    }
}

/// Checks an IDNST (`1` + FINESS checked; `3` + SIRET: 14 digits, Luhn; other types accepted when non-empty).
pub fn check_idnst(s: &str) -> Result<(), IdError> {
    match s.as_bytes().first() {
        Some(b'1') => Finess::parse(&s[1..]).map(|_| ()),
        Some(b'3') if s.len() == 15 && luhn_valid(&s.as_bytes()[1..]) => Ok(()),
        Some(b'3') => Err(IdError::National(s.into())),
        Some(_) if s.len() > 1 => Ok(()),
        _ => Err(IdError::National(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_reference_values() {
        // The textbook Luhn example, and a 10-digit body completed by its digit.
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert_eq!(luhn_digit(b"7992739871"), 3);
    }

    #[test]
    fn rpps_and_finess() {
        let r = Rpps::from_body(1_000_123_456);
        assert_eq!(r.as_str().len(), 11);
        assert!(Rpps::parse(r.as_str()).is_ok());
        let mut bad = r.as_str().as_bytes().to_vec();
        bad[10] = if bad[10] == b'9' { b'0' } else { bad[10] + 1 };
        assert!(matches!(
            Rpps::parse(std::str::from_utf8(&bad).unwrap()),
            Err(IdError::RppsKey(_))
        ));
        assert!(matches!(Rpps::parse("123"), Err(IdError::RppsFormat(_))));
        assert_eq!(r.idnps(), format!("8{r}"));
        for dept in ["75", "2A", "2B", "97", "01"] {
            let f = Finess::build(dept, 12_345).unwrap();
            assert!(Finess::parse(f.as_str()).is_ok(), "{f}");
            assert!(check_idnst(&f.idnst()).is_ok());
        }
        assert!(matches!(
            Finess::parse("7500X0001"),
            Err(IdError::FinessFormat(_))
        ));
        assert!(check_idnps("81234").is_err());
        assert!(check_idnst("").is_err());
    }
}
