//! HTTPS and mutual-TLS client authentication (RFC 8705), with a real TLS client: Python `requests` runs
//! `tests/clients/mtls_flows.py` against `socle serve --tls-cert … --tls-client-ca … --tls-client-crl …` on
//! every backend. The test makes its own authorities and certificates (rcgen): a recognised authority that
//! issues the server's certificate, the client's, another subject's and a revoked one; a foreign authority
//! issuing a certificate with the client's very subject; a self-signed certificate.

mod common;

use std::path::Path;

use common::{Server, after, backends, printed};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, date_time_ymd,
};

const SUBJECT: &[(DnType, &str)] = &[
    (DnType::CountryName, "FR"),
    (DnType::OrganizationName, "CH de Test"),
    (DnType::OrganizationalUnitName, "340780477"),
    (DnType::CommonName, "dpi.chtest.fr"),
];

fn params(subject: &[(DnType, &str)], serial: u64) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("paramètres");
    // Without rcgen's default common name, so that the subject is in the order given.
    p.distinguished_name = DistinguishedName::new();
    for (t, v) in subject {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

/// A certification authority: its certificate (PEM) and what signs with its key.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut p = params(
        &[(DnType::CountryName, "FR"), (DnType::CommonName, name)],
        1,
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("clé");
    let cert = p.self_signed(&key).expect("autorité");
    (cert.pem(), Issuer::new(p, key))
}

/// Writes `<name>.pem` and `<name>.key` for a client certificate issued by `ca` (or self-signed).
fn client(
    dir: &Path,
    name: &str,
    subject: &[(DnType, &str)],
    serial: u64,
    ca: Option<&Issuer<'static, KeyPair>>,
) {
    let mut p = params(subject, serial);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("clé");
    let cert = match ca {
        Some(ca) => p.signed_by(&key, ca),
        None => p.self_signed(&key),
    }
    .expect("certificat");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("écriture");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("écriture");
}

/// The authorities' and certificates' files, in a temporary directory; returns the recognised authority.
fn pki(dir: &Path) -> Issuer<'static, KeyPair> {
    let (ca_pem, ca) = authority("Autorité de test Socle");
    std::fs::write(dir.join("ca.pem"), ca_pem).expect("écriture");
    // The server: localhost and 127.0.0.1.
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("paramètres");
    p.distinguished_name.push(DnType::CommonName, "socle.test");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    let key = KeyPair::generate().expect("clé");
    let cert = p.signed_by(&key, &ca).expect("certificat serveur");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("écriture");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("écriture");
    // The clients.
    client(dir, "client", SUBJECT, 10, Some(&ca));
    client(
        dir,
        "other",
        &[
            (DnType::CountryName, "FR"),
            (DnType::OrganizationName, "CH de Test"),
            (DnType::CommonName, "autre.chtest.fr"),
        ],
        11,
        Some(&ca),
    );
    client(dir, "revoked", SUBJECT, 12, Some(&ca));
    let (_, rogue) = authority("Autorité inconnue");
    client(dir, "rogue", SUBJECT, 13, Some(&rogue));
    client(
        dir,
        "selfsigned",
        &[(DnType::CommonName, "logiciel-autonome")],
        14,
        None,
    );
    // The authority revokes serial 12.
    revoke(dir, &ca, &[12]);
    ca
}

/// Writes the authority's revocation list `ca.crl`, revoking `serials`.
fn revoke(dir: &Path, ca: &Issuer<'static, KeyPair>, serials: &[u64]) {
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 1, 1),
        next_update: date_time_ymd(2039, 1, 1),
        crl_number: SerialNumber::from(serials.len() as u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|n| RevokedCertParams {
                serial_number: SerialNumber::from(*n),
                revocation_time: date_time_ymd(2025, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca)
    .expect("liste de révocation");
    std::fs::write(dir.join("ca.crl"), crl.pem().expect("PEM")).expect("écriture");
}

#[test]
fn mutual_tls_client_authentication_and_bound_tokens() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/mtls_flows.py"
    );
    if !common::python_with("requests", "pip install requests") {
        return;
    }
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let ca = pki(dir.path());
    let f = |n: &str| dir.path().join(n).display().to_string();
    for b in backends() {
        let s = Server::start_secure(
            &b,
            &[
                "--tls-cert",
                &f("server.pem"),
                "--tls-key",
                &f("server.key"),
                "--tls-client-ca",
                &f("ca.pem"),
                "--tls-client-crl",
                &f("ca.crl"),
                "--tls-reload-secs",
                "1",
            ],
        );
        assert!(s.root.starts_with("https://127.0.0.1:"), "{}", s.root);
        // `socle clients register` of a pro client with this method.
        let registration = |method: &str, extra: &[&str]| {
            let mut args = vec![
                "clients",
                "register",
                "--realm",
                "pro",
                "--name",
                "Logiciel d'établissement",
                "--auth-method",
                method,
            ];
            args.extend_from_slice(extra);
            s.cli(&args)
        };
        let register = |method: &str, extra: &[&str]| printed(&registration(method, extra));
        let out = register("tls_client_auth", &["--certificate", &f("client.pem")]);
        assert!(
            out.contains(
                "sujet du certificat attendu : C=FR, O=CH de Test, OU=340780477, CN=dpi.chtest.fr"
            ),
            "{out}"
        );
        let pki_client = after(&out, "client_id:");
        // The same client registered from the distinguished name written in RFC 4514 order.
        let out = register(
            "tls_client_auth",
            &[
                "--tls-subject",
                "CN=dpi.chtest.fr,OU=340780477,O=CH de Test,C=FR",
            ],
        );
        let dn_client = after(&out, "client_id:");
        let out = register(
            "self_signed_tls_client_auth",
            &["--certificate", &f("selfsigned.pem")],
        );
        let self_client = after(&out, "client_id:");
        let out = register("client_secret_basic", &[]);
        let secret_client = (after(&out, "client_id:"), after(&out, "client_secret:"));
        // Registration errors are specific.
        let refused = |method: &str, extra: &[&str], reason: &str| {
            let bad = registration(method, extra);
            assert!(!bad.status.success(), "{method} {extra:?} accepté");
            let stderr = String::from_utf8_lossy(&bad.stderr);
            assert!(stderr.contains(reason), "{method} {extra:?} : {stderr}");
        };
        refused(
            "self_signed_tls_client_auth",
            &[],
            "exige le certificat du client",
        );
        refused(
            "tls_client_auth",
            &["--tls-subject", "CN"],
            "attribut sans « = » dans le nom distinctif : « CN »",
        );
        // The flows script, then (`revoked-later`) its check after a revocation.
        let run = |extra: &[&str]| {
            let mut args = vec![
                s.root.as_str(),
                dir.path().to_str().expect("chemin"),
                &pki_client,
                &dn_client,
                &self_client,
                &secret_client.0,
                &secret_client.1,
            ];
            args.extend_from_slice(extra);
            common::run_python(script, &args, &format!("{b:?}"));
        };
        run(&[]);
        // The authority revokes the client's certificate while the server runs: the new list is read
        // without a restart, and the certificate no longer authenticates.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        revoke(dir.path(), &ca, &[12, 10]);
        std::thread::sleep(std::time::Duration::from_millis(2500));
        run(&["revoked-later"]);
        // For the next backend, the list as it was.
        revoke(dir.path(), &ca, &[12]);
    }
}
