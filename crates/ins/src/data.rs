//! Reference tables shipped with Socle (`crates/ins/data/`, built by `scripts/gen-ins-data.py`, which states
//! their sources): INSEE communes with population and postal code, INSEE country codes, French surnames and
//! first names by sex and birth decade in order of frequency.

use std::collections::HashMap;
use std::sync::OnceLock;

const COMMUNES: &str = include_str!("../data/communes.tsv");
const COUNTRIES: &str = include_str!("../data/countries.tsv");
const SURNAMES: &str = include_str!("../data/surnames.txt");
const GIVEN_F: &str = include_str!("../data/given-f.tsv");
const GIVEN_M: &str = include_str!("../data/given-m.tsv");

#[derive(Debug, Clone)]
pub struct Place {
    /// INSEE code: commune (`78006`, `2A004`, `97105`) or country (`99350`).
    pub code: &'static str,
    pub name: &'static str,
    /// Commune population, or the country's weight among births abroad.
    pub weight: u32,
    /// Main postal code (communes only).
    pub postal: &'static str,
}

pub struct Tables {
    pub communes: Vec<Place>,
    pub countries: Vec<Place>,
    by_code: HashMap<&'static str, usize>,
    pub surnames: Vec<&'static str>,
    /// (decade start year, names) for each sex.
    pub given_f: Vec<(u16, Vec<&'static str>)>,
    pub given_m: Vec<(u16, Vec<&'static str>)>,
}

fn lines(s: &'static str) -> impl Iterator<Item = &'static str> {
    s.lines().filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn given(s: &'static str) -> Vec<(u16, Vec<&'static str>)> {
    lines(s)
        .filter_map(|l| {
            let (d, names) = l.split_once('\t')?;
            Some((d.parse().ok()?, names.split(',').collect()))
        })
        .collect()
}

pub fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let communes: Vec<Place> = lines(COMMUNES)
            .filter_map(|l| {
                let mut f = l.split('\t');
                let code = f.next()?;
                let weight = f.next()?.parse().ok()?;
                let postal = f.next()?;
                let name = f.next()?;
                Some(Place {
                    code,
                    name,
                    weight,
                    postal,
                })
            })
            .collect();
        let countries: Vec<Place> = lines(COUNTRIES)
            .filter_map(|l| {
                let mut f = l.split('\t');
                let code = f.next()?;
                let name = f.next()?;
                let weight = f.next()?.parse().ok()?;
                Some(Place {
                    code,
                    name,
                    weight,
                    postal: "",
                })
            })
            .collect();
        let mut by_code = HashMap::new();
        for (i, c) in communes.iter().enumerate() {
            by_code.insert(c.code, i);
        }
        for (i, c) in countries.iter().enumerate() {
            by_code.insert(c.code, communes.len() + i);
        }
        Tables {
            communes,
            countries,
            by_code,
            surnames: lines(SURNAMES).collect(),
            given_f: given(GIVEN_F),
            given_m: given(GIVEN_M),
        }
    })
}

impl Tables {
    /// The commune or country with this INSEE code.
    pub fn place(&self, code: &str) -> Option<&Place> {
        let i = *self.by_code.get(code.to_ascii_uppercase().as_str())?;
        self.communes
            .get(i)
            .or_else(|| self.countries.get(i - self.communes.len()))
    }

    /// Whether an INSEE birth place code is known: current communes and municipal arrondissements, communes
    /// merged, gone or renumbered since (births keep the code of their time), countries. Not known: countries'
    /// dependent territories with codes of their own, and communes gone before the COG's history starts.
    pub fn is_known_place(&self, code: &str) -> bool {
        self.place(code).is_some()
    }

    /// The first names of a sex (`true` = female) for a birth year (the nearest decade available).
    pub fn given_for(&self, female: bool, year: u16) -> &[&'static str] {
        let list = if female { &self.given_f } else { &self.given_m };
        list.iter()
            .rev()
            .find(|(d, _)| *d <= year)
            .or_else(|| list.first())
            .map(|(_, n)| n.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_load() {
        let t = tables();
        assert!(t.communes.len() > 34_000, "{}", t.communes.len());
        assert!(t.countries.len() >= 30);
        assert_eq!(t.surnames[0], "Martin");
        assert_eq!(
            t.place("75115").map(|p| p.name),
            Some("Paris 15e Arrondissement")
        );
        assert!(
            t.place("75056").is_none(),
            "Paris is coded by arrondissement"
        );
        assert!(t.is_known_place("2A004"));
        assert!(t.is_known_place("97105"));
        assert!(t.is_known_place("99350"));
        assert!(!t.is_known_place("99999"));
        // Every country of the COG list, not only those the generator draws.
        assert!(t.countries.len() > 190, "{}", t.countries.len());
        assert_eq!(t.place("99416").map(|p| p.name), Some("BRESIL"));
        assert!(
            !t.is_known_place("99100"),
            "France is not a country of birth abroad"
        );
        // Births keep the code of their time: communes merged since (Arlod, in Bellegarde-sur-Valserine then
        // Valserhône) and villages without inhabitants (Bezonvaux) are known, and never drawn.
        for code in ["01018", "55050"] {
            assert_eq!(t.place(code).map(|p| p.weight), Some(0), "{code}");
        }
        assert_eq!(t.given_for(false, 2015)[0], "Gabriel");
        assert!(!t.given_for(true, 1890).is_empty());
    }
}
