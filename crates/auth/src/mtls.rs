//! Mutual-TLS client authentication and certificate-bound access tokens (RFC 8705).
//!
//! The TLS layer (the server) reads the client's certificate during the handshake and hands this crate what
//! it needs: the certificate's SHA-256 thumbprint, its subject's attributes, and whether its chain leads to
//! one of the configured certification authorities (for France's health sector, the IGC-Santé). Two client
//! registrations use it:
//! - `tls_client_auth`: a certificate issued by a configured authority whose subject matches the registered
//!   distinguished name;
//! - `self_signed_tls_client_auth`: the registered certificate itself, recognised by its thumbprint.
//!
//! Access tokens issued to a client authenticated this way carry `cnf.x5t#S256`: they are only accepted on a
//! connection presenting the same certificate.

/// What the TLS handshake established about the client's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// base64url (no padding) of the SHA-256 of the certificate's DER encoding: `x5t#S256`.
    pub thumbprint: String,
    /// The subject's attributes in certificate order (most significant first, e.g. `C`, `O`, `OU`, `CN`), each
    /// as (short name or dotted OID, value).
    pub subject: Vec<(String, String)>,
    /// The chain was verified up to a configured certification authority (validity dates and revocation
    /// lists included).
    pub chain_verified: bool,
}

impl ClientCertificate {
    /// The subject as a readable distinguished name, most significant attribute first (`C=FR, O=…, CN=…`).
    pub fn subject_text(&self) -> String {
        self.subject
            .iter()
            .map(|(k, v)| format!("{k}={}", escape(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The canonical short name of an attribute type (`commonName`, `cn`, `2.5.4.3` → `CN`).
pub fn attribute_name(t: &str) -> String {
    let t = t.trim();
    let known = [
        ("CN", "commonName", "2.5.4.3"),
        ("SN", "surname", "2.5.4.4"),
        ("SERIALNUMBER", "serialNumber", "2.5.4.5"),
        ("C", "countryName", "2.5.4.6"),
        ("L", "localityName", "2.5.4.7"),
        ("ST", "stateOrProvinceName", "2.5.4.8"),
        ("STREET", "streetAddress", "2.5.4.9"),
        ("O", "organizationName", "2.5.4.10"),
        ("OU", "organizationalUnitName", "2.5.4.11"),
        ("TITLE", "title", "2.5.4.12"),
        ("GN", "givenName", "2.5.4.42"),
        (
            "ORGANIZATIONIDENTIFIER",
            "organizationIdentifier",
            "2.5.4.97",
        ),
        ("UID", "userId", "0.9.2342.19200300.100.1.1"),
        ("DC", "domainComponent", "0.9.2342.19200300.100.1.25"),
        ("EMAILADDRESS", "emailAddress", "1.2.840.113549.1.9.1"),
    ];
    let t = t
        .strip_prefix("OID.")
        .or(t.strip_prefix("oid."))
        .unwrap_or(t);
    for (short, long, oid) in known {
        if t.eq_ignore_ascii_case(short) || t.eq_ignore_ascii_case(long) || t == oid {
            return short.to_string();
        }
    }
    t.to_ascii_uppercase()
}

/// A value as compared: spaces trimmed and collapsed, case folded (RFC 4517 `caseIgnoreMatch`).
fn fold(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Parses a distinguished name written as in RFC 4514 (`CN=Serveur, OU=123456789, O=Hôpital, C=FR`; `\,` and
/// `\+` escape, a value may be wholly in double quotes, `+` joins the attributes of one RDN — compared as if
/// they were separate RDNs). Returns the (type, value) pairs in written order; a value empty once spaces are
/// trimmed is refused.
pub fn parse_dn(dn: &str) -> Result<Vec<(String, String)>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = dn.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => return Err("nom distinctif terminé par « \\ »".into()),
            },
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | ';' | '+' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err("guillemet non fermé dans le nom distinctif".into());
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let (t, v) = split_unescaped_eq(&p).ok_or_else(|| {
            format!(
                "attribut sans « = » dans le nom distinctif : « {} »",
                p.trim()
            )
        })?;
        let t = t.trim();
        if t.is_empty() {
            return Err(format!("attribut sans type : « {} »", p.trim()));
        }
        let raw = v.trim();
        // A value wholly in double quotes (RFC 2253 style): the quotes are not part of it.
        let quoted =
            raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') && !raw.ends_with("\\\"");
        let value = unescape(if quoted { &raw[1..raw.len() - 1] } else { raw });
        if fold(&value).is_empty() {
            return Err(format!("attribut {t} sans valeur"));
        }
        out.push((attribute_name(t), value));
    }
    Ok(out)
}

fn split_unescaped_eq(p: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in p.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '=' if !escaped => return Some((&p[..i], &p[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a certificate's subject is the registered distinguished name: same attributes, same values (case
/// and spacing ignored), in the certificate's order or in RFC 4514's reverse order (both are written).
pub fn subject_matches(registered: &[(String, String)], subject: &[(String, String)]) -> bool {
    if registered.len() != subject.len() || registered.is_empty() {
        return false;
    }
    let eq = |a: &(String, String), b: &(String, String)| {
        attribute_name(&a.0) == attribute_name(&b.0) && fold(&a.1) == fold(&b.1)
    };
    registered.iter().zip(subject).all(|(a, b)| eq(a, b))
        || registered.iter().rev().zip(subject).all(|(a, b)| eq(a, b))
}

/// A registered `x5t#S256` thumbprint: 43 base64url characters (32 bytes).
pub fn check_thumbprint(t: &str) -> Result<(), String> {
    use base64::Engine;
    let ok = t.len() == 43
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .is_ok_and(|b| b.len() == 32);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "empreinte de certificat invalide : « {t} » (x5t#S256 : SHA-256 en base64url, 43 caractères)"
        ))
    }
}

/// The `x5t#S256` of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    use base64::Engine;
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_in_both_orders() {
        let cert = pairs(&[
            ("C", "FR"),
            ("O", "CH de Test"),
            ("OU", "340780477"),
            ("CN", "dpi.chtest.fr"),
        ]);
        let reg = parse_dn("CN=dpi.chtest.fr, OU=340780477, O=CH de Test, C=FR").unwrap();
        assert!(subject_matches(&reg, &cert));
        let reg = parse_dn("C=FR;O=ch  de  TEST;OU=340780477;commonName=DPI.chtest.fr").unwrap();
        assert!(subject_matches(&reg, &cert));
        let reg = parse_dn("2.5.4.3=dpi.chtest.fr,OU=340780477,O=CH de Test,C=FR").unwrap();
        assert!(subject_matches(&reg, &cert));
        // One attribute differs, one is missing, one is extra.
        for dn in [
            "CN=dpi.chtest.fr, OU=340780478, O=CH de Test, C=FR",
            "CN=dpi.chtest.fr, O=CH de Test, C=FR",
            "CN=dpi.chtest.fr, OU=340780477, O=CH de Test, C=FR, L=Paris",
            "CN=dpi.chtest.fr, O=340780477, OU=CH de Test, C=FR",
        ] {
            assert!(!subject_matches(&parse_dn(dn).unwrap(), &cert), "{dn}");
        }
    }

    #[test]
    fn escapes_and_errors() {
        let reg = parse_dn(r"CN=Dupont\, Jean, O=A\+B").unwrap();
        assert_eq!(reg, pairs(&[("CN", "Dupont, Jean"), ("O", "A+B")]));
        let c = ClientCertificate {
            thumbprint: String::new(),
            subject: reg.clone(),
            chain_verified: true,
        };
        assert_eq!(parse_dn(&c.subject_text()).unwrap(), reg);
        assert_eq!(
            parse_dn(r#"CN="Dupont, Jean", O=a\"b"#).unwrap(),
            pairs(&[("CN", "Dupont, Jean"), ("O", "a\"b")])
        );
        for bad in [
            "",
            "CN",
            "CN=",
            "=x",
            "CN=a,",
            r"CN=a\",
            r#"CN=" ""#,
            "CN=\"\"",
            r#"CN="a, O=b"#,
        ] {
            assert!(parse_dn(bad).is_err(), "{bad:?}");
        }
        assert!(check_thumbprint(&thumbprint(b"x")).is_ok());
        assert!(check_thumbprint("abc").is_err());
        assert!(check_thumbprint(&"!".repeat(43)).is_err());
    }

    proptest! {
        /// Any subject written back as text parses to itself and matches; any other value does not match.
        #[test]
        fn written_subjects_round_trip(
            vals in proptest::collection::vec("[ -~À-ÿ]{1,12}", 1..5),
            other in "[a-z]{1,8}",
        ) {
            let names = ["C", "O", "OU", "CN", "L"];
            let subject: Vec<(String, String)> = vals
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.trim().is_empty() && !v.contains('"'))
                .map(|(i, v)| (names[i % names.len()].to_string(), v.trim().to_string()))
                .collect();
            prop_assume!(!subject.is_empty());
            let c = ClientCertificate { thumbprint: String::new(), subject: subject.clone(), chain_verified: true };
            let parsed = parse_dn(&c.subject_text()).unwrap();
            prop_assert!(subject_matches(&parsed, &subject));
            let mut changed = subject.clone();
            let last = changed.len() - 1;
            changed[last].1 = format!("{}{}", changed[last].1, other);
            prop_assert!(!subject_matches(&parsed, &changed));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_dn(&s);
            let _ = check_thumbprint(&s);
        }
    }
}
