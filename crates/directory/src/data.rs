//! The national nomenclatures the directory uses (`crates/directory/data/`, built by
//! `scripts/gen-directory-data.py` from the CI-SIS value set J01): professions (TRE_G15) and the ordinal
//! specialties (TRE_R38) of each profession.

use std::sync::OnceLock;

const PROFESSIONS: &str = include_str!("../data/professions.tsv");
const SPECIALTIES: &str = include_str!("../data/specialties.tsv");

pub struct Nomenclature {
    /// (code, label)
    pub professions: Vec<(&'static str, &'static str)>,
    /// (profession, code, label)
    pub specialties: Vec<(&'static str, &'static str, &'static str)>,
}

pub fn nomenclature() -> &'static Nomenclature {
    static N: OnceLock<Nomenclature> = OnceLock::new();
    N.get_or_init(|| {
        let rows = |s: &'static str| {
            s.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.split('\t').collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        Nomenclature {
            professions: rows(PROFESSIONS)
                .into_iter()
                .filter_map(|r| Some((*r.first()?, *r.get(1)?)))
                .collect(),
            specialties: rows(SPECIALTIES)
                .into_iter()
                .filter_map(|r| Some((*r.first()?, *r.get(1)?, *r.get(2)?)))
                .collect(),
        }
    })
}

impl Nomenclature {
    pub fn profession(&self, code: &str) -> Option<&'static str> {
        self.professions
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, l)| *l)
    }
    pub fn specialty(&self, code: &str) -> Option<(&'static str, &'static str)> {
        self.specialties
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(p, _, l)| (*p, *l))
    }
    pub fn specialties_of(&self, profession: &str) -> Vec<(&'static str, &'static str)> {
        self.specialties
            .iter()
            .filter(|(p, _, _)| *p == profession)
            .map(|(_, c, l)| (*c, *l))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loads() {
        let n = super::nomenclature();
        assert_eq!(n.profession("10"), Some("Médecin"));
        assert_eq!(n.profession("60"), Some("Infirmier"));
        assert_eq!(n.specialty("SM54"), Some(("10", "Médecine Générale")));
        assert!(n.specialties_of("40").len() >= 3);
    }
}
