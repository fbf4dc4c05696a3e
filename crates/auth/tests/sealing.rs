//! Secrets at rest: a provider given a secrets key seals the private signing keys and TOTP seeds an earlier,
//! keyless provider left in plain text, and goes on signing with the same keys; another key opens nothing.

use std::sync::Arc;

use serde_json::json;
use socle_auth::seal::{SEALED, Sealer};
use socle_auth::{Provider, ProviderConfig, Realm};

fn stored(store: &dyn socle_store::Store, sql: &str) -> Vec<String> {
    let mut rows = Vec::new();
    store
        .read(&mut |c| {
            rows = c.query(sql, &[])?;
            Ok(())
        })
        .unwrap();
    rows.iter()
        .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_string))
        .collect()
}

#[test]
fn plain_secrets_are_sealed_when_a_key_comes() {
    let dir = tempfile::tempdir().unwrap();
    let store = socle_store::open(None, dir.path()).unwrap();
    // An earlier provider, without a secrets key: keys and seeds in plain text.
    let plain = Provider::open(store.clone(), ProviderConfig::new("http://localhost:1")).unwrap();
    let info = plain
        .create_account(
            Realm::Patient,
            "alice",
            "sujet-alice",
            Some("Un-mot-de-passe-solide-42"),
            true,
            &json!({"ins": "x"}),
        )
        .unwrap();
    let (seed, _) = info.totp.unwrap();
    let signed = plain
        .keys()
        .sign(socle_auth::jose::Alg::Es256, &json!({"a": 1}))
        .unwrap();
    let kids_before = plain.keys().jwks().unwrap().to_string();
    drop(plain);
    assert_eq!(
        stored(store.as_ref(), "SELECT totp_secret FROM auth_accounts"),
        vec![seed.clone()]
    );

    // The same database, now with a key: everything sealed, nothing plain left.
    let key = Arc::new(Sealer::load_or_create(&dir.path().join("secrets.key")).unwrap());
    let mut config = ProviderConfig::new("http://localhost:1");
    config.secrets = Some(key.clone());
    let sealed = Provider::open(store.clone(), config).unwrap();
    let seeds = stored(store.as_ref(), "SELECT totp_secret FROM auth_accounts");
    let ders = stored(store.as_ref(), "SELECT private_der FROM auth_keys");
    assert!(!ders.is_empty());
    for v in seeds.iter().chain(&ders) {
        assert!(v.starts_with(SEALED), "{v}");
    }
    assert_eq!(
        socle_auth::seal::reveal(Some(&key), "totp/patient/alice", &seeds[0]).unwrap(),
        seed
    );
    // The same keys sign (their public parts unchanged); what the earlier provider signed still verifies.
    assert_eq!(sealed.keys().jwks().unwrap().to_string(), kids_before);
    assert!(sealed.keys().verify(&signed).is_ok());
    // A new account's seed is sealed from the start.
    sealed
        .create_account(
            Realm::Pro,
            "10000000000",
            "sujet-bob",
            Some("Un-mot-de-passe-solide-43"),
            true,
            &json!({}),
        )
        .unwrap();
    let seeds = stored(store.as_ref(), "SELECT totp_secret FROM auth_accounts");
    assert!(seeds.iter().all(|v| v.starts_with(SEALED)), "{seeds:?}");
    drop(sealed);

    // Another key opens nothing: the provider refuses to start, naming the setting.
    let mut config = ProviderConfig::new("http://localhost:1");
    config.secrets = Some(Arc::new(Sealer::from_bytes(&[9; 32])));
    let err = Provider::open(store.clone(), config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--secrets-key"), "{err}");
    // Once sealed, a plain value is refused (written without the key: a planted signing key, a known seed).
    store
        .write(&mut |c| {
            c.execute(
                "UPDATE auth_accounts SET totp_secret = 'JBSWY3DPEHPK3PXP' WHERE login = 'alice'",
                &[],
            )?;
            Ok(())
        })
        .unwrap();
    let mut config = ProviderConfig::new("http://localhost:1");
    config.secrets = Some(key.clone());
    let reopened = Provider::open(store.clone(), config).unwrap();
    assert!(
        stored(
            store.as_ref(),
            "SELECT totp_secret FROM auth_accounts WHERE login = 'alice'"
        )
        .iter()
        .all(|v| !v.starts_with(SEALED)),
        "not sealed again"
    );
    drop(reopened);
    store
        .write(&mut |c| {
            c.execute("UPDATE auth_keys SET private_der = 'cGxhbnRlZA'", &[])?;
            Ok(())
        })
        .unwrap();
    let mut config = ProviderConfig::new("http://localhost:1");
    config.secrets = Some(key.clone());
    let err = Provider::open(store.clone(), config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("en clair"), "{err}");
}
