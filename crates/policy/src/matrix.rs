//! The profession × document-type matrix: which document types each profession sees by default (the DMP's
//! *matrice d'habilitation*). Loaded from a tab-separated file (`profession  type  allow|deny  [comment]`, `*`
//! for any, `#` comments); the most specific row wins (see [`Matrix::rule_for`]). Socle ships a default
//! (`data/matrix.tsv`, its origin stated in its header).

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("matrice, ligne {line} : {message}")]
pub struct MatrixError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub profession: Option<String>,
    pub doc_type: Option<String>,
    pub allow: bool,
    /// Line in the source file (explanations cite it).
    pub line: usize,
    pub comment: String,
}

#[derive(Debug, Clone, Default)]
pub struct Matrix {
    rules: Vec<Rule>,
    /// (profession or "", type or "") → rule index.
    index: HashMap<(String, String), usize>,
}

/// The default matrix shipped with Socle.
pub const DEFAULT: &str = include_str!("../data/matrix.tsv");

impl Matrix {
    pub fn default_matrix() -> Matrix {
        // The shipped file is checked by a test; an error here would be a build defect.
        Matrix::parse(DEFAULT).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<Matrix, MatrixError> {
        let mut m = Matrix::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim_end_matches('\r');
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = l.split('\t').collect();
            if cols.len() < 3 {
                return Err(MatrixError {
                    line,
                    message: "trois colonnes attendues (profession, type, allow|deny), séparées par des tabulations".into(),
                });
            }
            let field = |s: &str| -> Result<Option<String>, MatrixError> {
                let s = s.trim();
                if s == "*" {
                    Ok(None)
                } else if s.is_empty() || s.len() > 64 || s.contains(char::is_whitespace) {
                    Err(MatrixError {
                        line,
                        message: format!("code invalide : « {s} »"),
                    })
                } else {
                    Ok(Some(s.to_string()))
                }
            };
            let profession = field(cols[0])?;
            let doc_type = field(cols[1])?;
            let allow = match cols[2].trim() {
                "allow" => true,
                "deny" => false,
                other => {
                    return Err(MatrixError {
                        line,
                        message: format!("accès « {other} » : allow ou deny attendu"),
                    });
                }
            };
            let key = (
                profession.clone().unwrap_or_default(),
                doc_type.clone().unwrap_or_default(),
            );
            if m.index.contains_key(&key) {
                return Err(MatrixError {
                    line,
                    message: "règle en double pour cette profession et ce type".into(),
                });
            }
            m.index.insert(key, m.rules.len());
            m.rules.push(Rule {
                profession,
                doc_type,
                allow,
                line,
                comment: cols
                    .get(3)
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default(),
            });
        }
        Ok(m)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that decides for a professional holding `professions` (TRE_G15 codes) and a document of type
    /// `doc_type`. Ranks, most specific first: profession and type exact; any profession and this type; this
    /// profession and any type; any and any. Between professions of equal rank, an allowing rule wins.
    /// `None`: no rule applies (denied).
    pub fn rule_for(&self, professions: &[String], doc_type: &str) -> Option<&Rule> {
        let get = |p: &str, t: &str| {
            self.index
                .get(&(p.to_string(), t.to_string()))
                .map(|&i| &self.rules[i])
        };
        let exact: Vec<&Rule> = professions
            .iter()
            .filter_map(|p| get(p, doc_type))
            .collect();
        if let Some(r) = pick(&exact) {
            return Some(r);
        }
        if let Some(r) = get("", doc_type) {
            return Some(r);
        }
        let by_profession: Vec<&Rule> = professions.iter().filter_map(|p| get(p, "")).collect();
        pick(&by_profession).or_else(|| get("", ""))
    }

    pub fn allows(&self, professions: &[String], doc_type: &str) -> bool {
        self.rule_for(professions, doc_type)
            .is_some_and(|r| r.allow)
    }
}

/// Among rules of equal rank, an allowing one; else the first.
fn pick<'a>(rules: &[&'a Rule]) -> Option<&'a Rule> {
    rules.iter().find(|r| r.allow).or(rules.first()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shipped_matrix_parses_and_decides() {
        let m = Matrix::parse(DEFAULT).unwrap();
        assert!(m.len() > 50);
        // Physicians see everything, pharmacists their documents and the shared syntheses, nothing else.
        assert!(m.allows(&p(&["10"]), "34874-8"));
        assert!(m.allows(&p(&["21"]), "60593-1"));
        assert!(m.allows(&p(&["21"]), "60591-5"));
        assert!(!m.allows(&p(&["21"]), "34874-8"));
        assert!(!m.allows(&p(&["21"]), "68599-0"));
        assert!(m.allows(&p(&["70"]), "PRESC-KINE"));
        assert!(!m.allows(&p(&["70"]), "PRESC-INF"));
        // Unknown professions get the wildcard rows.
        assert!(!m.allows(&p(&["99"]), "11502-2"));
        assert!(m.allows(&p(&["99"]), "SYNTH"));
        // Several professions: the most permissive of equally specific rules.
        assert!(m.allows(&p(&["60", "21"]), "60593-1"));
        assert!(!m.allows(&p(&[]), "34874-8"));
        let r = m.rule_for(&p(&["21"]), "34874-8").unwrap();
        assert_eq!(
            (r.profession.as_deref(), r.doc_type.as_deref(), r.allow),
            (None, None, false)
        );
    }

    #[test]
    fn specificity() {
        let m = Matrix::parse("21\t*\tdeny\n*\tSYNTH\tallow\n*\t*\tdeny\n10\t*\tallow\n*\tSECRET\tdeny\n10\tSECRET2\tdeny\n").unwrap();
        assert!(
            m.allows(&p(&["21"]), "SYNTH"),
            "a type row applies to every profession"
        );
        assert!(!m.allows(&p(&["21"]), "X"));
        assert!(m.allows(&p(&["10"]), "X"));
        assert!(
            !m.allows(&p(&["10"]), "SECRET"),
            "a type-wide deny applies to professions allowed everything"
        );
        assert!(!m.allows(&p(&["10"]), "SECRET2"));
        assert!(
            m.allows(&p(&["21", "10"]), "X"),
            "the most permissive of a professional's professions"
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line) in [
            ("10\t*\n", 1),
            ("# c\n10\t*\tpeut-être\n", 2),
            ("10\t*\tallow\n10\t*\tdeny\n", 2),
            ("1 0\t*\tallow\n", 1),
        ] {
            assert_eq!(Matrix::parse(text).unwrap_err().line, line, "{text:?}");
        }
    }
}
