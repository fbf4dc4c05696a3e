//! Reproducible synthetic persons with coherent INS (the reference registry's content for tests, demos and
//! benchmarks). The same seed gives the same persons on every machine and version of Rust (own PRNG).
//!
//! - Sex: 51.5 % female. Age: uniform over 0–59 years, then decreasing linearly to 104 (reference year 2026).
//! - Birth place: 8 % abroad (countries weighted as in `countries.tsv`), otherwise a commune drawn in
//!   proportion to its population (Paris, Lyon, Marseille by arrondissement).
//! - Names: surnames and first names drawn with weight 1/(rank + 30) from the frequency-ordered lists, first
//!   names from the birth decade; 1 to 3 first names (60/30/10 %), 4 % hyphenated compound first names,
//!   3 % compound surnames.
//! - Matricule: NIR with sex, year, month and birth place of the traits, order numbers counted per
//!   (sex, year, month, place), correct key. 1 % of the persons born abroad hold a NIA instead.
//!   Synthetic NIRs use the *demo* identifier system (`…4.11`); NIAs `…4.9`.
//! - Twins: 1.6 % of the persons are generated as twin pairs (same birth name, date and place, consecutive
//!   order numbers, different first names). Homonyms: 0.05 % get a "perfect homonym" (same birth name, first
//!   first name, date and sex, born elsewhere).
//! - Carte Vitale: every person has a distinct 10-digit card number.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::data::{Place, tables};
use crate::nir::compose;
use crate::traits::official_name;
use crate::{OID_DEMO, OID_NIA, SYSTEM_VITALE};

/// SplitMix64: small, fast, and fixed here so that a seed means the same data everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Cumulative weights for drawing by weight.
pub struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    /// A weight of 0 is never drawn (places known but not drawn: communes merged since, countries of rare
    /// births); the others in proportion.
    pub fn new(weights: impl Iterator<Item = u64>) -> Self {
        let mut total = 0;
        let cumulative = weights
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Weighted { cumulative }
    }
    /// Rank-based weights 1/(r + 30), scaled to integers.
    pub fn zipf(n: usize) -> Self {
        Self::new((0..n).map(|r| 1_000_000_000 / (r as u64 + 31)))
    }
    pub fn draw(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0).max(1);
        let x = rng.below(total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

/// One generated person.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub matricule: String,
    /// `urn:oid:…` system of the matricule.
    pub system: &'static str,
    /// Official birth name and first names (uppercase, no diacritics).
    pub family: String,
    pub given: Vec<String>,
    pub birth_date: String,
    pub gender: &'static str,
    pub birth_place: &'static str,
    pub birth_place_name: &'static str,
    pub card: String,
}

impl Person {
    /// As a reference identity of the registry.
    pub fn to_official(&self) -> crate::Official {
        crate::Official {
            matricule: self.matricule.clone(),
            system: self.system.to_string(),
            traits: crate::Traits {
                family: self.family.clone(),
                given: self.given.clone(),
                birth_date: self.birth_date.clone(),
                gender: self.gender.to_string(),
                birth_place: Some(self.birth_place.to_string()),
            },
            card: Some(self.card.clone()),
        }
    }

    /// As a FHIR `Patient` (FR Core INS layout): the format of `socle generate --out` and
    /// `socle import --registry`.
    pub fn to_fhir(&self) -> Value {
        let abroad = self.birth_place.starts_with("99");
        let mut address = json!({
            "extension": [{
                "url": crate::EXT_INSEE_CODE,
                "valueCoding": {"system": if abroad { crate::SYSTEM_INSEE_COUNTRY } else { crate::SYSTEM_INSEE_COMMUNE }, "code": self.birth_place}
            }]
        });
        if abroad {
            address["country"] = json!(self.birth_place_name);
        } else {
            address["city"] = json!(self.birth_place_name);
        }
        json!({
            "resourceType": "Patient",
            "extension": [{"url": crate::EXT_BIRTH_PLACE, "valueAddress": address}],
            "identifier": [
                {"use": "official", "system": self.system, "value": self.matricule},
                {"system": SYSTEM_VITALE, "value": self.card}
            ],
            "name": [{"use": "official", "family": self.family, "given": self.given}],
            "gender": self.gender,
            "birthDate": self.birth_date
        })
    }
}

/// Generates persons one after another (constant memory apart from the order-number counters).
pub struct PersonGenerator {
    rng: Rng,
    surnames: Weighted,
    communes: Weighted,
    countries: Weighted,
    given_f: Vec<(u16, Weighted)>,
    given_m: Vec<(u16, Weighted)>,
    /// Next order number per (sex digit, year modulo 100, month, place), the four packed in a `u64`
    /// (10 M persons make millions of keys).
    orders: HashMap<u64, u16>,
    pending: Vec<Person>,
    count: u64,
}

const REFERENCE_YEAR: u16 = 2026;

impl PersonGenerator {
    pub fn new(seed: u64) -> Self {
        let t = tables();
        let given = |l: &Vec<(u16, Vec<&str>)>| {
            l.iter()
                .map(|(d, n)| (*d, Weighted::zipf(n.len())))
                .collect()
        };
        PersonGenerator {
            rng: Rng::new(seed),
            surnames: Weighted::zipf(t.surnames.len()),
            communes: Weighted::new(t.communes.iter().map(|c| c.weight as u64)),
            countries: Weighted::new(t.countries.iter().map(|c| c.weight as u64)),
            given_f: given(&t.given_f),
            given_m: given(&t.given_m),
            orders: HashMap::new(),
            pending: Vec::new(),
            count: 0,
        }
    }

    fn birth_year(&mut self) -> u16 {
        // Ages 0–59 uniformly, then a linear decrease to 104: a triangle on top of a rectangle.
        loop {
            let age = self.rng.below(105) as u16;
            let keep = if age < 60 {
                true
            } else {
                self.rng.below(45) >= (age - 60) as u64
            };
            if keep {
                return REFERENCE_YEAR - 1 - age;
            }
        }
    }

    fn place(&mut self) -> &'static Place {
        let t = tables();
        if self.rng.chance(0.08) {
            &t.countries[self.countries.draw(&mut self.rng)]
        } else {
            &t.communes[self.communes.draw(&mut self.rng)]
        }
    }

    fn first_name(&mut self, female: bool, year: u16) -> String {
        let t = tables();
        let list = if female { &self.given_f } else { &self.given_m };
        let i = list
            .iter()
            .rposition(|(d, _)| *d <= year)
            .unwrap_or_default();
        let names = t.given_for(female, list[i].0);
        let n = names[list[i].1.draw(&mut self.rng).min(names.len() - 1)];
        official_name(n)
    }

    fn given_names(&mut self, female: bool, year: u16) -> Vec<String> {
        let k = match self.rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        let mut out: Vec<String> = Vec::with_capacity(k);
        while out.len() < k {
            let mut n = self.first_name(female, year);
            if out.is_empty() && self.rng.chance(0.04) {
                let second = self.first_name(female, year);
                if second != n {
                    n = format!("{n}-{second}");
                }
            }
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    fn surname(&mut self) -> String {
        let t = tables();
        let a = official_name(t.surnames[self.surnames.draw(&mut self.rng)]);
        if self.rng.chance(0.03) {
            let b = official_name(t.surnames[self.surnames.draw(&mut self.rng)]);
            if b != a {
                return format!("{a}-{b}");
            }
        }
        a
    }

    fn card(&self, index: u64) -> String {
        // A bijection of 0..10^10 (multiplier coprime with 10): distinct numbers, no table.
        let n = (index
            .wrapping_mul(7_919_382_817)
            .wrapping_add(1_234_567_891))
            % 10_000_000_000;
        format!("{n:010}")
    }

    fn matricule(
        &mut self,
        female: bool,
        year: u16,
        month: u8,
        place: &'static str,
    ) -> Option<String> {
        let sex_digit = if female { 2 } else { 1 };
        let place_bits = place
            .bytes()
            .take(5)
            .fold(0u64, |acc, b| (acc << 8) | b as u64);
        // The NIR carries the year modulo 100: people born a century apart share the counter.
        let key = place_bits
            | (month as u64) << 40
            | ((year % 100) as u64) << 44
            | (sex_digit as u64) << 60;
        let order = self.orders.entry(key).or_insert(0);
        *order += 1;
        if *order > 999 {
            return None;
        }
        compose(sex_digit, (year % 100) as u8, month, place, *order)
    }

    fn person(
        &mut self,
        female: bool,
        family: String,
        given: Vec<String>,
        date: (u16, u8, u8),
        place: &'static Place,
    ) -> Option<Person> {
        let (year, month, day) = date;
        let matricule = self.matricule(female, year, month, place.code)?;
        let system = if place.code.starts_with("99") && self.rng.chance(0.01) {
            OID_NIA
        } else {
            OID_DEMO
        };
        let card = self.card(self.count);
        self.count += 1;
        Some(Person {
            matricule,
            system,
            family,
            given,
            birth_date: format!("{year:04}-{month:02}-{day:02}"),
            gender: if female { "female" } else { "male" },
            birth_place: place.code,
            birth_place_name: place.name,
            card,
        })
    }

    /// The next person.
    pub fn next_person(&mut self) -> Person {
        if let Some(p) = self.pending.pop() {
            return p;
        }
        loop {
            let female = self.rng.chance(0.515);
            let year = self.birth_year();
            let month = 1 + self.rng.below(12) as u8;
            let day = 1 + self.rng.below(crate::registry::days_in(year, month) as u64) as u8;
            let place = self.place();
            let family = self.surname();
            let given = self.given_names(female, year);
            let Some(p) = self.person(
                female,
                family.clone(),
                given.clone(),
                (year, month, day),
                place,
            ) else {
                continue; // 999 births that month in that place already: draw again
            };
            if self.rng.chance(0.008) {
                // A twin (0.8 % of draws → 1.6 % of persons): same name, date, place; other first names.
                let f2 = self.rng.chance(0.5);
                let mut g2 = self.given_names(f2, year);
                if g2[0] == given[0] {
                    g2[0] = format!("{}-{}", g2[0], self.first_name(f2, year));
                }
                if let Some(t) = self.person(f2, family.clone(), g2, (year, month, day), place) {
                    self.pending.push(t);
                }
            } else if self.rng.chance(0.0005) {
                // A perfect homonym born elsewhere.
                let other = self.place();
                if other.code != place.code
                    && let Some(h) = self.person(
                        female,
                        family,
                        vec![given[0].clone()],
                        (year, month, day),
                        other,
                    )
                {
                    self.pending.push(h);
                }
            }
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nir::Nir;

    #[test]
    fn reproducible_and_coherent() {
        let a: Vec<Person> = {
            let mut g = PersonGenerator::new(7);
            (0..3000).map(|_| g.next_person()).collect()
        };
        let b: Vec<Person> = {
            let mut g = PersonGenerator::new(7);
            (0..3000).map(|_| g.next_person()).collect()
        };
        assert_eq!(a, b, "same seed, same persons");
        let mut seen = std::collections::HashSet::new();
        let mut abroad = 0;
        for p in &a {
            let nir = Nir::parse(&p.matricule).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert!(
                nir.inconsistencies(Some(p.gender), Some(&p.birth_date), Some(p.birth_place))
                    .is_empty(),
                "{p:?}"
            );
            assert!(
                seen.insert(p.matricule.clone()),
                "duplicate {}",
                p.matricule
            );
            assert!(tables().is_known_place(p.birth_place));
            assert_eq!(p.family, official_name(&p.family));
            abroad += nir.born_abroad() as usize;
        }
        assert!((120..400).contains(&abroad), "born abroad: {abroad}");
        let cards: std::collections::HashSet<_> = a.iter().map(|p| &p.card).collect();
        assert_eq!(cards.len(), a.len());
        let mut g = PersonGenerator::new(8);
        assert_ne!(g.next_person(), a[0], "another seed, other persons");
    }

    #[test]
    fn zero_weights_are_never_drawn() {
        let w = Weighted::new([0, 5, 0, 3, 0].into_iter());
        let mut rng = Rng::new(7);
        let mut seen = [0; 5];
        for _ in 0..10_000 {
            seen[w.draw(&mut rng)] += 1;
        }
        assert_eq!((seen[0], seen[2], seen[4]), (0, 0, 0), "{seen:?}");
        assert!(seen[1] > seen[3] && seen[3] > 0, "{seen:?}");
    }

    #[test]
    fn matricules_are_unique_at_scale() {
        // People born a century apart in the same place and month share the NIR's year digits: the order
        // numbers must not restart for them (a bug this test caught at 1 M persons).
        let mut g = PersonGenerator::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300_000 {
            let p = g.next_person();
            assert!(seen.insert(p.matricule.clone()), "duplicate {p:?}");
        }
    }
}
