//! Property tests of the ITI-65 checks: a valid submission passes; any element removed, replaced by a wrong
//! type or any byte of the document flipped gives an error, never a panic, and never a half-checked success.

use proptest::prelude::*;
use serde_json::{Value, json};
use socle_dmp::sample::{self, Person, SampleDoc};
use socle_dmp::{DmpError, Options, Submission, Submitter, Terminology};

fn person() -> Person {
    Person::example()
}

fn valid() -> (Value, Vec<u8>) {
    let d = SampleDoc::report("P1", 2_000);
    let cda = sample::cda_n1(&person(), &d);
    (sample::provide_bundle("p1", "S1", &[(d, cda.clone())]), cda)
}

fn parse(b: Value) -> Result<Submission, DmpError> {
    let terms = Terminology::embedded().unwrap();
    Submission::parse(b, &terms, &Options::default(), Submitter::Professional)
}

/// Every path to a leaf of `v` (object keys and array indexes).
fn paths(v: &Value, at: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = at.clone();
                p.push(json!(k));
                out.push(p.clone());
                paths(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(json!(i));
                paths(c, p, out);
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for k in path {
        cur = match k {
            Value::String(s) => cur.get_mut(s.as_str())?,
            Value::Number(n) => cur.get_mut(n.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[test]
fn the_sample_is_valid() {
    let (b, _) = valid();
    let sub = parse(b).unwrap();
    assert_eq!(sub.docs.len(), 1);
    assert!(sub.docs[0].cda.is_some());
}

#[test]
fn oversized_documents_are_refused_before_decoding() {
    let (b, _) = valid();
    let terms = Terminology::embedded().unwrap();
    let opts = Options {
        max_document_bytes: 1_000,
        ..Options::default()
    };
    let e = Submission::parse(b, &terms, &opts, Submitter::Professional).unwrap_err();
    assert_eq!((e.code(), e.status()), ("too-large", 413));
}

/// A document at the size limit wrapped in lines of 76 characters (as MIME writers do) is taken: the lines are
/// not counted in its size, neither before decoding nor after; one byte over the limit is refused.
#[test]
fn the_size_limit_counts_wrapped_base64_without_its_line_breaks() {
    use base64::Engine as _;
    let terms = Terminology::embedded().unwrap();
    let wrapped = |bytes: &[u8]| {
        let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = flat
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("{}\r\n", lines.join("\r\n"))
    };
    // Three sizes: every remainder of the length by 3 (one or two padding symbols, or none).
    let mut remainders = std::collections::BTreeSet::new();
    for size in 2_000..2_030 {
        let d = SampleDoc::report("P1", size);
        let cda = sample::cda_n1(&person(), &d);
        if !remainders.insert(cda.len() % 3) {
            continue;
        }
        let b = sample::provide_bundle("p1", "S1", &[(d, cda.clone())]);
        limits(&terms, b, &cda, &wrapped);
    }
    assert_eq!(remainders.len(), 3, "{remainders:?}");
}

fn limits(terms: &Terminology, b: Value, cda: &[u8], wrapped: &dyn Fn(&[u8]) -> String) {
    let mut m = b.clone();
    m["entry"][2]["resource"]["data"] = json!(wrapped(cda));
    let at_limit = Options {
        max_document_bytes: cda.len() as u64,
        ..Options::default()
    };
    let sub = Submission::parse(m.clone(), terms, &at_limit, Submitter::Professional).unwrap();
    assert_eq!(sub.parts[0].bytes, cda);
    let under = Options {
        max_document_bytes: cda.len() as u64 - 1,
        ..Options::default()
    };
    let e = Submission::parse(m, terms, &under, Submitter::Professional).unwrap_err();
    assert_eq!((e.code(), e.status()), ("too-large", 413));
    // Wrapped and broken: the error names base64 and the Binary's data.
    let mut bad = b;
    bad["entry"][2]["resource"]["data"] = json!(format!("{}\n*AAA", wrapped(cda)));
    let e =
        Submission::parse(bad, terms, &Options::default(), Submitter::Professional).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("base64 invalide") && text.contains("data"),
        "{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_replaced_element_is_an_error_or_still_consistent(pick in any::<prop::sample::Index>(), kind in 0..4u8) {
        let (b, _) = valid();
        let mut all = Vec::new();
        paths(&b, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        let mut m = b.clone();
        let replacement = match kind {
            0 => Value::Null,
            1 => json!(42),
            2 => json!("x"),
            _ => json!({"unexpected": [1, 2]}),
        };
        if let Some(slot) = at(&mut m, &path) {
            *slot = replacement;
        }
        // Never a panic; a success only when what the checks read is unchanged (a display text, a title…).
        if let Ok(sub) = parse(m) {
            prop_assert_eq!(sub.docs.len(), 1);
            prop_assert_eq!(sub.parts.len(), 1);
        }
    }

    /// The SIMD decoder that reads the documents accepts and refuses exactly what `base64`'s `STANDARD` does
    /// (alphabet, padding, canonical last symbol), with the same bytes.
    #[test]
    fn the_fast_base64_decoder_agrees_with_the_reference(
        s in "[A-Za-z0-9+/=_ \n-]{0,24}",
        bytes in prop::collection::vec(any::<u8>(), 0..100),
        cut in any::<prop::sample::Index>(),
    ) {
        use base64::Engine as _;
        let reference = base64::engine::general_purpose::STANDARD;
        let encoded = reference.encode(&bytes);
        let truncated = &encoded[..cut.index(encoded.len() + 1)];
        for text in [s.as_str(), encoded.as_str(), truncated] {
            prop_assert_eq!(
                base64_simd::STANDARD.decode_to_vec(text).ok(),
                reference.decode(text).ok(),
                "{:?}",
                text
            );
        }
    }

    #[test]
    fn any_flipped_document_byte_is_caught(pos in any::<prop::sample::Index>(), bit in 0..8u8) {
        let (_, mut cda) = valid();
        let i = pos.index(cda.len());
        cda[i] ^= 1 << bit;
        // The metadata still carries the original hash: the flip is caught whatever the byte.
        let (b0, orig) = valid();
        let mut b = b0.clone();
        use base64::Engine as _;
        b["entry"][2]["resource"]["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&cda));
        prop_assert!(orig != cda);
        let e = parse(b).unwrap_err();
        prop_assert!(matches!(e.code(), "hash-mismatch" | "size-mismatch"), "{}", e);
    }
}
