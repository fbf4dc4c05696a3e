//! Property tests: no input makes the parsers panic, and the depth limit is exact.

mod common;

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use socle_cda::value_set::ValueSet;
use socle_cda::{CdaError, Limit, Limits, XmlError, extract_n1_body, parse};

/// Runs every entry point on `bytes`; the only requirement is returning.
fn exercise(bytes: &[u8]) {
    let limits = Limits::default();
    let parsed = parse(bytes, &limits);
    let extracted = extract_n1_body(bytes, &limits);
    // Both read the same document with the same rules: they accept or refuse together, except
    // for the body decoding errors only the extraction has.
    match (&parsed, &extracted) {
        (Ok(doc), _) => {
            assert!(doc.effective_time.parsed.is_some());
            if !doc.is_n1() {
                assert_eq!(extracted, Ok(None));
            }
        }
        (Err(e), Err(f)) => assert_eq!(e, f),
        (Err(e), Ok(_)) => panic!("parse refused ({e}) what extraction accepted"),
    }
    let _ = ValueSet::parse(bytes, &limits);
    let _ = socle_cda::hashes(bytes);
}

/// A real example to mutate: a small official one when the shared data is present, else the
/// synthetic level-1 document.
fn seed_document() -> Vec<u8> {
    let dirs = match std::env::var_os("SOCLE_CDA_EXAMPLES_DIR") {
        Some(d) => vec![std::path::PathBuf::from(d)],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cda-examples"),
            Path::new("/work/shared/data/cda-examples").to_path_buf(),
        ],
    };
    dirs.iter()
        .find_map(|d| std::fs::read(d.join("VAC-NOTE_2023.01.xml")).ok())
        .unwrap_or_else(|| common::n1().into_bytes())
}

/// Fragments that steer mutations towards the parser's interesting paths.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "&",
    ";",
    "&amp;",
    "&#",
    "&#x",
    "&foo;",
    "<!DOCTYPE x>",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?",
    "?>",
    "<?xml version=\"1.0\"?>",
    "\"",
    "'",
    "=",
    " xmlns=\"urn:hl7-org:v3\"",
    " xmlns:x=\"urn:x\"",
    "x:",
    "<id root=\"1\"/>",
    "<code code=\"c\"/>",
    "<effectiveTime value=\"2024\"/>",
    "</ClinicalDocument>",
    "<component>",
    "<nonXMLBody>",
    "<text representation=\"B64\">",
    "\u{0}",
    "\u{FFFF}",
    "é",
    "\u{FEFF}",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    InsertBytes(Index, Vec<u8>),
    InsertToken(Index, Index),
    Delete(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, b) => {
            let at = i.index(bytes.len());
            bytes[at] ^= b | 1;
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::InsertBytes(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::InsertToken(i, t) => {
            let at = i.index(bytes.len() + 1);
            let token = TOKENS[t.index(TOKENS.len())].as_bytes();
            bytes.splice(at..at, token.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i.index(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_token_soup_never_panics(
        tokens in prop::collection::vec(any::<Index>(), 0..200),
    ) {
        let mut text = String::from("<ClinicalDocument xmlns=\"urn:hl7-org:v3\">");
        for t in &tokens {
            text.push_str(TOKENS[t.index(TOKENS.len())]);
        }
        exercise(text.as_bytes());
    }

    #[test]
    fn mutations_of_a_real_example_never_panic(
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = seed_document();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        exercise(&bytes);
    }

    #[test]
    fn nesting_is_accepted_up_to_the_limit_and_refused_beyond(depth in 1usize..600) {
        // The body's deepest element is at 5 + depth (see `common::nested`).
        let doc = common::nested(depth);
        let result = parse(doc.as_bytes(), &Limits::default());
        if 5 + depth <= 256 {
            prop_assert!(result.is_ok(), "depth {}: {:?}", depth, result);
        } else {
            prop_assert_eq!(
                result.unwrap_err(),
                CdaError::Xml(XmlError::LimitExceeded { limit: Limit::MaxDepth, max: 256 })
            );
        }
    }

    #[test]
    fn a_configured_depth_limit_is_exact(max_depth in 7usize..64, depth in 1usize..80) {
        let limits = Limits { max_depth, ..Limits::default() };
        let result = parse(common::nested(depth).as_bytes(), &limits);
        if 5 + depth <= max_depth {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(
                result.unwrap_err(),
                CdaError::Xml(XmlError::LimitExceeded { limit: Limit::MaxDepth, max: max_depth })
            );
        }
    }
}
