//! SMART App Launch v2 scopes: `patient|user|system / Type|* . c?r?u?d?s?` (v1 `.read`/`.write`/`.*`
//! accepted and read as their v2 equivalents), plus the OpenID Connect and launch scopes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// One interaction permission (the letters of a v2 scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Create = 1,
    Read = 2,
    Update = 4,
    Delete = 8,
    Search = 16,
}

const LETTERS: [(char, u8); 5] = [('c', 1), ('r', 2), ('u', 4), ('d', 8), ('s', 16)];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Resource {
        context: Context,
        /// `None` for `*`.
        rtype: Option<String>,
        perms: u8,
    },
    /// `openid`, `profile`, `fhirUser`, `offline_access`, `launch/patient`…
    Other(String),
}

const OTHER: &[&str] = &[
    "openid",
    "profile",
    "email",
    "fhirUser",
    "offline_access",
    "online_access",
    "launch",
    "launch/patient",
    // Socle's own: the person's portal manages all their applications' consents (without it, an application
    // sees and withdraws only its own).
    "consents",
];

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        if OTHER.contains(&s) {
            return Ok(Scope::Other(s.to_string()));
        }
        let invalid = || format!("portée inconnue ou mal formée : « {s} »");
        let (ctx, rest) = s.split_once('/').ok_or_else(invalid)?;
        let context = match ctx {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return Err(invalid()),
        };
        if rest.contains('?') {
            return Err(format!(
                "portée avec paramètres non prise en charge : « {s} »"
            ));
        }
        let (rtype, p) = rest.split_once('.').ok_or_else(invalid)?;
        let rtype = match rtype {
            "*" => None,
            t if !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_alphabetic())
                && t.as_bytes()[0].is_ascii_uppercase() =>
            {
                Some(t.to_string())
            }
            _ => return Err(invalid()),
        };
        let perms = match p {
            "read" => 2 | 16,
            "write" => 1 | 4 | 8,
            "*" => 31,
            letters => {
                // Letters in the order c r u d s, each at most once.
                let mut perms = 0u8;
                let mut next = 0;
                for ch in letters.chars() {
                    let pos = LETTERS[next..]
                        .iter()
                        .position(|(l, _)| *l == ch)
                        .ok_or_else(invalid)?;
                    perms |= LETTERS[next + pos].1;
                    next += pos + 1;
                }
                if perms == 0 {
                    return Err(invalid());
                }
                perms
            }
        };
        Ok(Scope::Resource {
            context,
            rtype,
            perms,
        })
    }

    /// Whether this (granted) scope includes `other` (requested).
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Other(a), Scope::Other(b)) => a == b,
            (
                Scope::Resource {
                    context: c1,
                    rtype: t1,
                    perms: p1,
                },
                Scope::Resource {
                    context: c2,
                    rtype: t2,
                    perms: p2,
                },
            ) => c1 == c2 && (t1.is_none() || t1 == t2) && p2 & !p1 == 0,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Other(s) => f.write_str(s),
            Scope::Resource {
                context,
                rtype,
                perms,
            } => {
                write!(
                    f,
                    "{}/{}.",
                    context.as_str(),
                    rtype.as_deref().unwrap_or("*")
                )?;
                for (l, bit) in LETTERS {
                    if perms & bit != 0 {
                        write!(f, "{l}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A space-separated scope list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    pub fn parse(s: &str) -> Result<Scopes, String> {
        let mut v: Vec<Scope> = Vec::new();
        for part in s.split(' ').filter(|p| !p.is_empty()) {
            let sc = Scope::parse(part)?;
            if !v.contains(&sc) {
                v.push(sc);
            }
        }
        Ok(Scopes(v))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|s| matches!(s, Scope::Other(o) if o == name))
    }

    /// The requested scopes that no granted scope covers (scope escalation).
    pub fn not_covered<'a>(&self, requested: &'a Scopes) -> Vec<&'a Scope> {
        requested
            .0
            .iter()
            .filter(|r| !self.0.iter().any(|g| g.covers(r)))
            .collect()
    }

    /// The contexts in which these scopes allow `perm` on `rtype` (empty: not allowed).
    pub fn contexts_for(&self, rtype: &str, perm: Perm) -> Vec<Context> {
        let mut out: Vec<Context> = self
            .0
            .iter()
            .filter_map(|s| match s {
                Scope::Resource {
                    context,
                    rtype: t,
                    perms,
                } if perms & perm as u8 != 0 && t.as_deref().is_none_or(|t| t == rtype) => {
                    Some(*context)
                }
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert_eq!(
            Scope::parse("patient/*.rs").unwrap().to_string(),
            "patient/*.rs"
        );
        assert_eq!(
            Scope::parse("user/Observation.read").unwrap().to_string(),
            "user/Observation.rs"
        );
        assert_eq!(
            Scope::parse("system/*.*").unwrap().to_string(),
            "system/*.cruds"
        );
        for bad in [
            "patient/*.sr",
            "patient/*.rr",
            "patient/*.",
            "admin/*.r",
            "patient/observation.r",
            "patient/*.x",
            "x",
            "patient/Observation.rs?category=a",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn coverage() {
        let granted = Scopes::parse("openid user/*.rs user/Observation.cruds").unwrap();
        let ok = Scopes::parse("openid user/Patient.r user/Observation.cu").unwrap();
        assert!(granted.not_covered(&ok).is_empty());
        let esc = Scopes::parse("user/Patient.c system/*.r offline_access").unwrap();
        assert_eq!(granted.not_covered(&esc).len(), 3);
        assert_eq!(
            granted.contexts_for("Observation", Perm::Delete),
            vec![Context::User]
        );
        assert!(granted.contexts_for("Patient", Perm::Delete).is_empty());
    }
}
