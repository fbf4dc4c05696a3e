//! Property tests of the parsers that read outside input: JWS, scopes, base32, networks never panic; scopes
//! print back to what they parse from; a signed token verifies, and any change to it does not.

use proptest::prelude::*;
use socle_auth::jose::{Alg, Jws};
use socle_auth::{Scope, Scopes, totp};

proptest! {
    #[test]
    fn jws_decode_never_panics(s in "\\PC{0,300}") {
        let _ = Jws::decode(&s).map(|j| j.verify(&[]));
    }

    #[test]
    fn dotted_base64_never_panics(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,80}", c in "[A-Za-z0-9_-]{0,120}") {
        let _ = Jws::decode(&format!("{a}.{b}.{c}")).map(|j| j.verify(&[]));
    }

    #[test]
    fn scopes_never_panic_and_round_trip(s in "[a-zA-Z/*.? _]{0,60}") {
        if let Ok(sc) = Scopes::parse(&s) {
            prop_assert_eq!(Scopes::parse(&sc.to_string()).unwrap(), sc);
        }
    }

    #[test]
    fn v2_scopes_round_trip(ctx in prop::sample::select(vec!["patient", "user", "system"]),
                            t in prop::sample::select(vec!["*", "Observation", "Patient"]),
                            mask in 1u8..32) {
        let letters: String = [('c', 1), ('r', 2), ('u', 4), ('d', 8), ('s', 16)]
            .iter().filter(|(_, b)| mask & b != 0).map(|(l, _)| *l).collect();
        let text = format!("{ctx}/{t}.{letters}");
        let sc = Scope::parse(&text).unwrap();
        prop_assert_eq!(sc.to_string(), text);
        prop_assert!(sc.covers(&sc));
    }

    #[test]
    fn base32_round_trip(v in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(totp::unbase32(&totp::base32(&v)).unwrap(), v);
    }

    #[test]
    fn networks_never_panic(s in "\\PC{0,40}") {
        let _ = s.parse::<socle_auth::Network>();
    }
}

/// A token signed by the key ring verifies; flipping any character of it makes it fail.
#[test]
fn tampering_breaks_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let store = socle_store::open(None, dir.path()).unwrap();
    let keys = socle_auth::keys::KeyRing::open(store).unwrap();
    for alg in [Alg::Es256, Alg::Rs256] {
        let t = keys
            .sign(alg, &serde_json::json!({"sub": "x", "scope": "user/*.rs"}))
            .unwrap();
        assert!(keys.verify(&t).is_ok());
        let bytes = t.as_bytes();
        for i in (0..bytes.len()).step_by(7) {
            if bytes[i] == b'.' {
                continue;
            }
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(b).unwrap();
            assert!(
                keys.verify(&altered).is_err(),
                "{alg:?}, caractère {i} modifié"
            );
        }
    }
}
