//! Bearer tokens, client assertions, ID-token hints, JWKs, scope strings and certificate subjects (mutual TLS)
//! come from outside: decoding and checking them must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(jws) = socle_auth::jose::Jws::decode(s) {
            let _ = jws.verify(&[]);
        }
        let _ = socle_auth::Scopes::parse(s);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
            let _ = socle_auth::jose::PublicJwk::from_json(&v);
        }
        let _ = socle_auth::totp::unbase32(s);
        let _ = s.parse::<socle_auth::Network>();
        if let Ok(dn) = socle_auth::mtls::parse_dn(s) {
            let _ = socle_auth::mtls::subject_matches(&dn, &dn);
        }
        let _ = socle_auth::mtls::check_thumbprint(s);
    }
});
