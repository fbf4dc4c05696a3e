//! The *matricule INS*: a NIR (numéro d'inscription au répertoire, the "numéro de sécurité sociale") or a NIA
//! (numéro d'identification d'attente, same layout, given while a NIR is being assigned). 13 characters and a
//! 2-digit key:
//!
//! | positions | meaning |
//! |---|---|
//! | 1 | sex: 1 male, 2 female; 3/4 person born abroad being registered; 7/8 provisional number (odd = male) |
//! | 2–3 | last two digits of the birth year |
//! | 4–5 | birth month 01–12; 20, 30–42, 50–99: month unknown or fictitious ("pseudo-mois") |
//! | 6–7 | département of birth: 01–95, `2A`/`2B` (Corse-du-Sud/Haute-Corse; `20` before 1976), 96 (former protectorate), 99 (born abroad) |
//! | 6–8 | overseas (97x, 98x): 3-digit département, then a 2-digit commune |
//! | 8–10 | commune of birth (INSEE code, 3 digits), or for 99 the INSEE country code (3 digits) |
//! | 11–13 | order number of the birth in the month and commune, 001–999 |
//! | 14–15 | key: 97 − (number mod 97), the number read with `2A` as 19 and `2B` as 18 |
//!
//! The birth place code the NIR carries is the 5-character INSEE code: département + commune
//! (`75056`, `2A004`, `97105`) or `99` + country (`99350`).

use std::fmt;

/// A parse or validation error; the message names the faulty part (French, shown to users).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NirError {
    #[error("matricule INS : 15 caractères attendus (13 + clé), {0} trouvés")]
    Length(usize),
    #[error("matricule INS : caractère {found:?} invalide en position {position}")]
    Character { position: usize, found: char },
    #[error("matricule INS : premier chiffre (sexe) {0} invalide (1, 2, 3, 4, 7 ou 8 attendu)")]
    Sex(char),
    #[error(
        "matricule INS : mois de naissance {0:?} invalide (01 à 12, ou 20, 30 à 42, 50 à 99 si inconnu)"
    )]
    Month(String),
    #[error("matricule INS : département de naissance {0:?} invalide")]
    Department(String),
    #[error("matricule INS : commune ou pays de naissance {0:?} invalide")]
    Place(String),
    #[error("matricule INS : numéro d'ordre {0:?} invalide (001 à 999)")]
    Order(String),
    #[error("matricule INS : clé {found:02} incorrecte (attendue {expected:02})")]
    Key { expected: u8, found: u8 },
}

/// The birth month field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirthMonth {
    Known(u8),
    /// Unknown or fictitious month (the raw code, e.g. 20 or 99).
    Unknown(u8),
}

/// Sex as the first digit encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    /// The FHIR `Patient.gender` code.
    pub fn fhir(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
        }
    }
}

/// A syntactically valid matricule with a correct key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nir {
    /// The 15 characters, uppercase, no spaces.
    text: String,
}

impl fmt::Display for Nir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Nir {
    /// Parses a matricule. Spaces are ignored (`1 85 05 78 006 084 36`), letters may be lowercase (`2a`).
    pub fn parse(input: &str) -> Result<Self, NirError> {
        let text: String = input
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let n = text.chars().count();
        if n != 15 {
            return Err(NirError::Length(n));
        }
        let b = text.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            let corsica = (i == 6) && b[5] == b'2' && (c == b'A' || c == b'B');
            if !c.is_ascii_digit() && !corsica {
                return Err(NirError::Character {
                    position: i + 1,
                    found: c as char,
                });
            }
        }
        let s = &text;
        if !matches!(b[0], b'1' | b'2' | b'3' | b'4' | b'7' | b'8') {
            return Err(NirError::Sex(b[0] as char));
        }
        let month: u8 = s[3..5].parse().unwrap_or(0);
        if month_code(month).is_none() {
            return Err(NirError::Month(s[3..5].to_string()));
        }
        let dept = &s[5..7];
        match dept {
            "00" => return Err(NirError::Department(dept.into())),
            "97" | "98" => {
                let d3 = &s[5..8];
                let ok = match dept {
                    "97" => matches!(b[7], b'1'..=b'8'),
                    _ => matches!(b[7], b'4'..=b'9'),
                };
                if !ok {
                    return Err(NirError::Department(d3.into()));
                }
                if &s[8..10] == "00" {
                    return Err(NirError::Place(s[5..10].into()));
                }
            }
            _ => {
                if &s[7..10] == "000" {
                    return Err(NirError::Place(s[7..10].into()));
                }
            }
        }
        if &s[10..13] == "000" {
            return Err(NirError::Order(s[10..13].into()));
        }
        let found: u8 = s[13..15].parse().unwrap_or(0);
        let expected = key_of(&s[..13]).ok_or_else(|| NirError::Department(dept.into()))?;
        if found != expected {
            return Err(NirError::Key { expected, found });
        }
        Ok(Nir { text })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first digit: 7 or 8 for a provisional number.
    pub fn is_provisional(&self) -> bool {
        matches!(self.text.as_bytes()[0], b'7' | b'8')
    }

    pub fn sex(&self) -> Sex {
        if (self.text.as_bytes()[0] - b'0') % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// The last two digits of the birth year.
    pub fn year2(&self) -> u8 {
        self.text[1..3].parse().unwrap_or(0)
    }

    pub fn month(&self) -> BirthMonth {
        let m: u8 = self.text[3..5].parse().unwrap_or(0);
        month_code(m).unwrap_or(BirthMonth::Unknown(m))
    }

    /// The 5-character INSEE birth place code (`75056`, `2A004`, `97105`, `99350`).
    pub fn birth_place(&self) -> &str {
        &self.text[5..10]
    }

    /// Born abroad (département 99).
    pub fn born_abroad(&self) -> bool {
        &self.text[5..7] == "99"
    }

    /// Checks the NIR against the civil-status traits it encodes; returns the names of the traits that
    /// disagree (`gender`, `birthdate`, `birthplace`). `birth_date` is a FHIR date (`YYYY`, `YYYY-MM` or
    /// `YYYY-MM-DD`); `birth_place` an INSEE code. A person born in Corsica before 1976 may carry `20` where
    /// the commune is now coded `2A`/`2B`.
    pub fn inconsistencies(
        &self,
        gender: Option<&str>,
        birth_date: Option<&str>,
        birth_place: Option<&str>,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        if let Some(g) = gender
            && g != self.sex().fhir()
        {
            out.push("gender");
        }
        if let Some(d) = birth_date {
            let year = d.get(0..4).and_then(|y| y.parse::<u32>().ok());
            let month = d.get(5..7).and_then(|m| m.parse::<u8>().ok());
            let year_ok = year.is_some_and(|y| (y % 100) as u8 == self.year2());
            let month_ok = match (self.month(), month) {
                (BirthMonth::Known(m), Some(dm)) => m == dm,
                _ => true,
            };
            if !year_ok || !month_ok {
                out.push("birthdate");
            }
        }
        if let Some(p) = birth_place {
            let mine = self.birth_place();
            let same = p.eq_ignore_ascii_case(mine)
                || (mine.starts_with("20")
                    && (p.starts_with("2A") || p.starts_with("2B"))
                    && p[2..] == mine[2..]);
            if !same {
                out.push("birthplace");
            }
        }
        out
    }
}

/// Classifies a month code; `None` if it is not allowed.
fn month_code(m: u8) -> Option<BirthMonth> {
    match m {
        1..=12 => Some(BirthMonth::Known(m)),
        20 | 30..=42 | 50..=99 => Some(BirthMonth::Unknown(m)),
        _ => None,
    }
}

/// The key of the first 13 characters: 97 − (number mod 97), with `2A` read as 19 and `2B` as 18.
/// `None` if the 13 characters are not digits (apart from a Corsica département).
pub fn key_of(first13: &str) -> Option<u8> {
    let digits = if first13.len() == 13 && (&first13[5..7] == "2A" || &first13[5..7] == "2B") {
        let sub = if &first13[5..7] == "2A" { "19" } else { "18" };
        format!("{}{}{}", &first13[..5], sub, &first13[7..])
    } else {
        first13.to_string()
    };
    if digits.len() != 13 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some((97 - n % 97) as u8)
}

/// Builds a matricule from its parts (the generator's and the tests' entry point): `sex_digit` 1–8,
/// `place` a 5-character INSEE code, `order` 1–999. Returns the 15 characters with their key.
pub fn compose(sex_digit: u8, year2: u8, month: u8, place: &str, order: u16) -> Option<String> {
    if place.len() != 5 || order == 0 || order > 999 || year2 > 99 || sex_digit > 9 {
        return None;
    }
    let first13 = format!("{sex_digit}{year2:02}{month:02}{place}{order:03}");
    let key = key_of(&first13)?;
    Some(format!("{first13}{key:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_layouts() {
        // Metropolitan, Corsica, overseas, born abroad.
        for (parts, place) in [
            ((1, 85, 5, 19), "78006"),
            ((2, 70, 12, 5), "2A004"),
            ((1, 2, 3, 44), "2B033"),
            ((2, 99, 1, 7), "97105"),
            ((1, 60, 20, 301), "99350"),
            ((8, 1, 99, 12), "99100"),
        ] {
            let (s, y, m, o) = parts;
            let text = compose(s, y, m, place, o).unwrap();
            let nir = Nir::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(nir.birth_place(), place);
            assert_eq!(nir.year2(), y);
        }
        let n = Nir::parse(&compose(2, 70, 12, "2A004", 5).unwrap()).unwrap();
        assert_eq!(n.sex(), Sex::Female);
        assert_eq!(n.month(), BirthMonth::Known(12));
        // Spaces and lowercase.
        let t = compose(1, 85, 5, "2a006", 19);
        assert!(t.is_none(), "lowercase département is not composed");
        let t = compose(1, 85, 5, "2A006", 19).unwrap();
        let spaced = format!(
            "{} {} {} {} {} {}",
            &t[0..1],
            &t[1..3],
            &t[3..5],
            &t[5..10],
            &t[10..13],
            &t[13..15]
        )
        .to_lowercase();
        assert_eq!(Nir::parse(&spaced).unwrap().as_str(), t);
    }

    #[test]
    fn the_classic_example_key() {
        // 1 84 12 76 451 089 → key 46 (the example every French payroll guide uses).
        assert_eq!(key_of("1841276451089"), Some(46));
        assert!(Nir::parse("184127645108946").is_ok());
        assert_eq!(
            Nir::parse("184127645108947"),
            Err(NirError::Key {
                expected: 46,
                found: 47
            })
        );
    }

    #[test]
    fn errors_name_the_part() {
        let ok = compose(1, 85, 5, "78006", 19).unwrap();
        let with = |i: usize, s: &str| format!("{}{}{}", &ok[..i], s, &ok[i + s.len()..]);
        assert!(matches!(Nir::parse("123"), Err(NirError::Length(3))));
        assert!(matches!(Nir::parse(&with(0, "5")), Err(NirError::Sex('5'))));
        assert!(matches!(
            Nir::parse(&with(3, "13")),
            Err(NirError::Month(_))
        ));
        assert!(matches!(
            Nir::parse(&with(3, "00")),
            Err(NirError::Month(_))
        ));
        assert!(matches!(
            Nir::parse(&with(5, "00")),
            Err(NirError::Department(_))
        ));
        assert!(matches!(
            Nir::parse(&with(5, "979")),
            Err(NirError::Department(_))
        ));
        assert!(matches!(
            Nir::parse(&with(7, "000")),
            Err(NirError::Place(_))
        ));
        assert!(matches!(
            Nir::parse(&with(10, "000")),
            Err(NirError::Order(_))
        ));
        assert!(matches!(
            Nir::parse(&with(2, "X")),
            Err(NirError::Character { position: 3, .. })
        ));
        assert!(matches!(
            Nir::parse(&with(6, "C")),
            Err(NirError::Character { position: 7, .. })
        ));
        assert!(Nir::parse(&with(6, "A")).is_err(), "2A needs its own key");
        assert!(Nir::parse("").is_err());
        assert!(Nir::parse("éééééééééééééé").is_err());
    }

    #[test]
    fn traits_consistency() {
        let n = Nir::parse(&compose(2, 85, 5, "78006", 19).unwrap()).unwrap();
        assert!(
            n.inconsistencies(Some("female"), Some("1985-05-17"), Some("78006"))
                .is_empty()
        );
        assert_eq!(
            n.inconsistencies(Some("male"), Some("1986-05-17"), Some("78007")),
            vec!["gender", "birthdate", "birthplace"]
        );
        // Unknown month: any month of the right year.
        let u = Nir::parse(&compose(1, 60, 20, "99350", 301).unwrap()).unwrap();
        assert!(u.born_abroad());
        assert!(u.inconsistencies(None, Some("1960-07-01"), None).is_empty());
        // Corsica before 1976.
        let c = Nir::parse(&compose(1, 60, 3, "20004", 3).unwrap()).unwrap();
        assert!(c.inconsistencies(None, None, Some("2A004")).is_empty());
    }
}
