//! Substring search on names (`name:contains`, `family:contains`…) without scanning every index row.
//!
//! For the name-like string parameters ([`has_vocabulary`]) each distinct normalised value is kept once in
//! `str_vocab`, and its trigrams (three consecutive characters) in `str_trigram`. A `:contains` search then
//! intersects the trigram lists of the searched text — a few thousand distinct names at most, even with
//! millions of people sharing them — checks each candidate with `LIKE`, and reads the index rows of the
//! candidates only. Texts shorter than three characters scan the vocabulary (distinct values), not the rows.
//!
//! Values are added as they are written and never removed: a value no resource carries any more only costs
//! a lookup that finds no row. Databases created before the vocabulary existed are filled once at open
//! ([`backfill`]).

use crate::StoreError;
use crate::sql::{ColType, SqlConn, SqlValue};

/// The string parameters whose values get a vocabulary: the names of people and structures, where
/// substring search is what users type (the Annuaire's "nom contient…").
pub fn has_vocabulary(param: &str) -> bool {
    VOCABULARY_PARAMS.contains(&param)
}

const VOCABULARY_PARAMS: [&str; 4] = ["name", "family", "given", "alias"];

/// The distinct trigrams of a normalised value, in order of first appearance (linear in the value's length:
/// searched texts and names come from clients).
pub fn trigrams(norm: &str) -> Vec<String> {
    let chars: Vec<char> = norm.chars().collect();
    let mut seen: std::collections::HashSet<&[char]> = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for w in chars.windows(3) {
        if seen.insert(w) {
            out.push(w.iter().collect());
        }
    }
    out
}

/// Values longer than this many characters are listed under [`LONG_VALUE`] instead of their trigrams (a
/// 16 MiB name would otherwise add millions of rows inside the write transaction); every `:contains` search
/// takes them as candidates too, its `LIKE` check keeping the result exact. Real names are far shorter.
pub const MAX_TRIGRAM_CHARS: usize = 200;

/// The pseudo-trigram under which long values are listed (see [`MAX_TRIGRAM_CHARS`]).
pub const LONG_VALUE: &str = "";

/// At most this many trigrams of the searched text are intersected (spread over the text); the `LIKE`
/// check on the candidates makes the result exact whatever the number.
pub const MAX_QUERY_TRIGRAMS: usize = 6;

/// The trigrams to intersect for a searched text (empty when it is shorter than three characters).
pub fn query_trigrams(norm: &str) -> Vec<String> {
    let all = trigrams(norm);
    if all.len() <= MAX_QUERY_TRIGRAMS {
        return all;
    }
    let step = (all.len() - 1) as f64 / (MAX_QUERY_TRIGRAMS - 1) as f64;
    let mut out: Vec<String> = (0..MAX_QUERY_TRIGRAMS)
        .map(|i| all[((i as f64) * step).round() as usize].clone())
        .collect();
    out.dedup();
    out
}

/// Records the values of `(rtype, param, norm)` not seen before, with their trigrams. Call it in the
/// transaction that writes the index rows.
pub fn record(c: &mut dyn SqlConn, values: &[(String, String, String)]) -> Result<(), StoreError> {
    let mut tri_rows: Vec<Vec<SqlValue>> = Vec::new();
    for (rtype, param, norm) in values {
        // RETURNING yields a row only when the value was inserted now (new to the vocabulary).
        let inserted = c.query_one(
            "INSERT INTO str_vocab (rtype, param, norm) VALUES (?, ?, ?) \
             ON CONFLICT (rtype, param, norm) DO NOTHING RETURNING norm",
            &[
                rtype.as_str().into(),
                param.as_str().into(),
                norm.as_str().into(),
            ],
        )?;
        if inserted.is_none() {
            continue;
        }
        let tris = if norm.chars().nth(MAX_TRIGRAM_CHARS).is_some() {
            vec![LONG_VALUE.to_string()]
        } else {
            trigrams(norm)
        };
        for t in tris {
            tri_rows.push(vec![
                rtype.as_str().into(),
                param.as_str().into(),
                t.into(),
                norm.as_str().into(),
            ]);
        }
    }
    if !tri_rows.is_empty() {
        c.insert_ignore_rows("str_trigram", TRIGRAM_COLS, &tri_rows)?;
    }
    Ok(())
}

const TRIGRAM_COLS: &[(&str, ColType)] = &[
    ("rtype", ColType::Text),
    ("param", ColType::Text),
    ("tri", ColType::Text),
    ("norm", ColType::Text),
];

/// Fills the vocabulary from the index rows already stored, once per database (marked in `socle_meta`).
pub fn backfill(c: &mut dyn SqlConn) -> Result<(), StoreError> {
    if c.query_one(
        "SELECT value FROM socle_meta WHERE name = 'string_vocabulary'",
        &[],
    )?
    .is_some()
    {
        return Ok(());
    }
    let params: Vec<SqlValue> = VOCABULARY_PARAMS.iter().map(|p| (*p).into()).collect();
    let marks = vec!["?"; params.len()].join(", ");
    let rows = c.query(
        &format!("SELECT DISTINCT rtype, param, norm FROM idx_string WHERE param IN ({marks})"),
        &params,
    )?;
    let values: Vec<(String, String, String)> = rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter().map(SqlValue::into_string);
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect();
    if !values.is_empty() {
        tracing::info!(
            values = values.len(),
            "vocabulaire des noms : construction initiale"
        );
    }
    record(c, &values)?;
    c.execute(
        "INSERT INTO socle_meta (name, value) VALUES ('string_vocabulary', 1)",
        &[],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigrams_of_names() {
        assert_eq!(trigrams("martin"), ["mar", "art", "rti", "tin"]);
        assert_eq!(trigrams("aaaa"), ["aaa"]);
        assert!(trigrams("li").is_empty());
        // Characters, not bytes.
        assert_eq!(trigrams("ß-é"), ["ß-é"]);
    }

    #[test]
    fn trigrams_of_a_long_text_take_linear_time() {
        // 300,000 distinct trigrams: quadratic deduplication would take minutes here.
        let mut x: u32 = 1;
        let text: String = (0..300_002)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from_u32(0x4E00 + (x >> 16) % 20_000).unwrap_or('x')
            })
            .collect();
        let started = std::time::Instant::now();
        let t = trigrams(&text);
        assert!(t.len() > 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(query_trigrams(&text).len() <= MAX_QUERY_TRIGRAMS);
    }

    #[test]
    fn long_queries_keep_a_spread_of_trigrams() {
        let q = query_trigrams("abcdefghijklmnop");
        assert_eq!(q.len(), MAX_QUERY_TRIGRAMS);
        assert_eq!(q.first().map(String::as_str), Some("abc"));
        assert_eq!(q.last().map(String::as_str), Some("nop"));
        assert_eq!(query_trigrams("dupont"), ["dup", "upo", "pon", "ont"]);
    }
}
