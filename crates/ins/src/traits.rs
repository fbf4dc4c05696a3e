//! The five civil-status traits of the INS and the rules used to compare them.
//!
//! **Matching rules** (retrieve and verify use the same ones; they are documented in the README):
//!
//! - *Names* are compared after normalisation: uppercase, diacritics removed (`É`→`E`, `Ç`→`C`, `Œ`→`OE`,
//!   `Æ`→`AE`, `ß`→`SS`), hyphens, apostrophes, dots and repeated spaces read as one space, leading and
//!   trailing spaces dropped. So `Lefèvre-Dupont`, `LEFEVRE DUPONT` and `lefevre  dupont` are the same birth
//!   name, and `D'Arc` equals `D ARC`. A different spelling (`LEFEBVRE`) or a name the person no longer bears
//!   (a birth name changed by decree) does not match: INSi has no phonetic matching.
//! - *First names*: the official identity holds the ordered list of birth first names. A query matches when
//!   its first names, in order, equal the whole list, **or** when its first first name equals the official
//!   first first name (the usual case: a desk records one first name). `Jean-Pierre` and `Jean Pierre`
//!   compare equal; `Pierre` does not match `Jean-Pierre`.
//! - *Birth date*: the same FHIR date (`YYYY-MM-DD`; a partial official date `YYYY` or `YYYY-MM` only
//!   matches the same partial date).
//! - *Sex*: `male`/`female`, equal.
//! - *Birth place*: the 5-character INSEE code (commune, or `99` + country), equal ignoring case; optional in a
//!   retrieve query (then it does not discriminate), compared when given.

/// The traits of one identity, as held by the reference registry (official) or given in a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traits {
    /// Birth name (nom de naissance).
    pub family: String,
    /// Birth first names, in order.
    pub given: Vec<String>,
    /// FHIR date.
    pub birth_date: String,
    /// `male` or `female`.
    pub gender: String,
    /// INSEE code.
    pub birth_place: Option<String>,
}

/// Normalises a name for comparison (see the module documentation).
pub fn normalize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = true; // drops leading separators
    for c in s.chars() {
        let mapped: &str = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => {
                out.push(c.to_ascii_uppercase());
                space = false;
                continue;
            }
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => {
                "A"
            }
            'ç' | 'Ç' => "C",
            'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "E",
            'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "I",
            'ñ' | 'Ñ' => "N",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => {
                "O"
            }
            'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "U",
            'ý' | 'ÿ' | 'Ý' | 'Ÿ' => "Y",
            'œ' | 'Œ' => "OE",
            'æ' | 'Æ' => "AE",
            'ß' => "SS",
            _ => {
                // Separators and anything else (hyphen, apostrophes, dots, spaces): one space.
                if !space {
                    out.push(' ');
                    space = true;
                }
                continue;
            }
        };
        out.push_str(mapped);
        space = false;
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The official spelling of a name: uppercase without diacritics, hyphens and apostrophes kept
/// (`Lefèvre-d'Ornano` → `LEFEVRE-D'ORNANO`), spaces collapsed.
pub fn official_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for part in word.split_inclusive(['-', '\'']) {
            let (body, sep) = match part.chars().last() {
                Some(c @ ('-' | '\'')) => (&part[..part.len() - c.len_utf8()], Some(c)),
                _ => (part, None),
            };
            out.push_str(&normalize_name(body).replace(' ', ""));
            if let Some(c) = sep {
                out.push(c);
            }
        }
    }
    out
}

/// Whether the first names of a query match the official list (see the module documentation).
pub fn given_match(query: &[String], official: &[String]) -> bool {
    let q: Vec<String> = query
        .iter()
        .map(|g| normalize_name(g))
        .filter(|g| !g.is_empty())
        .collect();
    let o: Vec<String> = official.iter().map(|g| normalize_name(g)).collect();
    if q.is_empty() || o.is_empty() {
        return false;
    }
    q.join(" ") == o.join(" ") || q[0] == o[0]
}

/// Compares query traits with an official identity; returns the names of the traits that differ
/// (`family`, `given`, `birthdate`, `gender`, `birthplace`), in that order. The birth place is compared only
/// when both sides have one.
pub fn differences(query: &Traits, official: &Traits) -> Vec<&'static str> {
    let mut out = Vec::new();
    if normalize_name(&query.family) != normalize_name(&official.family) {
        out.push("family");
    }
    if !given_match(&query.given, &official.given) {
        out.push("given");
    }
    if query.birth_date != official.birth_date {
        out.push("birthdate");
    }
    if query.gender != official.gender {
        out.push("gender");
    }
    if let (Some(q), Some(o)) = (&query.birth_place, &official.birth_place)
        && !q.eq_ignore_ascii_case(o)
    {
        out.push("birthplace");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("Lefèvre-Dupont"), "LEFEVRE DUPONT");
        assert_eq!(normalize_name("  lefevre   dupont "), "LEFEVRE DUPONT");
        assert_eq!(normalize_name("D'Arc"), "D ARC");
        assert_eq!(normalize_name("Œuvray"), "OEUVRAY");
        assert_eq!(normalize_name("Ñúñez"), "NUNEZ");
        assert_eq!(normalize_name("--"), "");
        assert_eq!(
            official_name("Lefèvre-d'Ornano  de  la Tour"),
            "LEFEVRE-D'ORNANO DE LA TOUR"
        );
        assert_eq!(official_name("Hélène"), "HELENE");
    }

    #[test]
    fn first_names() {
        let official = v(&["JEAN-PIERRE", "MARIE", "ANDRE"]);
        assert!(given_match(&v(&["Jean-Pierre"]), &official));
        assert!(given_match(&v(&["jean pierre"]), &official));
        assert!(given_match(
            &v(&["Jean-Pierre", "Marie", "André"]),
            &official
        ));
        assert!(!given_match(&v(&["Pierre"]), &official));
        assert!(!given_match(&v(&["Marie"]), &official));
        assert!(!given_match(&v(&[]), &official));
        assert!(!given_match(&v(&[""]), &official));
    }

    #[test]
    fn differences_are_named() {
        let o = Traits {
            family: "MARTIN".into(),
            given: v(&["LUCIE", "ANNE"]),
            birth_date: "1990-02-03".into(),
            gender: "female".into(),
            birth_place: Some("2A004".into()),
        };
        let mut q = o.clone();
        q.family = "Martín".into();
        q.given = v(&["Lucie"]);
        q.birth_place = Some("2a004".into());
        assert!(differences(&q, &o).is_empty());
        q.family = "MARTINS".into();
        q.birth_date = "1990-02-04".into();
        q.birth_place = Some("2B004".into());
        assert_eq!(
            differences(&q, &o),
            vec!["family", "birthdate", "birthplace"]
        );
        q.birth_place = None;
        assert_eq!(differences(&q, &o), vec!["family", "birthdate"]);
    }
}
