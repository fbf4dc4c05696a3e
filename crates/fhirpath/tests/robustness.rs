//! The parser and evaluator must never panic, whatever the input.

use proptest::prelude::*;
use socle_fhirpath::Expression;

fn patient() -> serde_json::Value {
    serde_json::from_str(
        r##"{"resourceType":"Patient","id":"p1","birthDate":"1974-12-25","_birthDate":{"extension":[{"url":"u","valueString":"x"}]},
            "name":[{"family":"Doe","given":["A","B"]}],"active":true,"multipleBirthInteger":2,
            "contained":[{"resourceType":"Organization","id":"o1","name":"Org"}],
            "managingOrganization":{"reference":"#o1"}}"##,
    )
    .expect("json")
}

const TOKENS: &[&str] = &[
    "name",
    "given",
    "Patient",
    ".",
    "(",
    ")",
    "[",
    "]",
    "where(",
    "select(",
    "1",
    "2.5",
    "'a'",
    "@2014-01",
    "@T10:00",
    "+",
    "-",
    "*",
    "/",
    "div",
    "mod",
    "and",
    "or",
    "implies",
    "=",
    "!=",
    "~",
    "<",
    ">=",
    "|",
    "is",
    "as",
    "Quantity",
    "$this",
    "$index",
    "$total",
    "%resource",
    "first()",
    "exists()",
    "count()",
    ",",
    "{}",
    "resolve()",
    "1 'mg'",
    "3 days",
    "true",
    "iif(",
    "aggregate(",
    "descendants()",
    "toString()",
    "'",
    "`",
    "/*",
    "//",
    "%",
    "@",
    "substring(",
    "extension(",
    "`x`",
    "repeat(",
    "sort(",
    "lowBoundary(",
    "power(",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = Expression::parse(&s);
    }

    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..24)) {
        let src = toks.join(" ");
        if let Ok(e) = Expression::parse(&src) {
            let p = patient();
            let _ = e.evaluate(&p);
        }
    }
}

#[test]
fn deep_nesting_is_rejected_or_evaluated_without_overflow() {
    // run on a small (2 MiB, like tokio workers) stack
    let h = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let p = patient();
            for depth in [50usize, 100, 150, 195, 250, 10_000] {
                let nested = "name.where(".repeat(depth) + "true" + &")".repeat(depth);
                let paren = "(".repeat(depth) + "1" + &")".repeat(depth);
                let neg = "-".repeat(depth) + "1";
                let chain = "name".to_string() + &".given".repeat(depth);
                let union = vec!["name"; depth].join(" | ");
                let calls = "1".to_string() + &".abs()".repeat(depth);
                let iifs = "iif(true, ".repeat(depth) + "1" + &")".repeat(depth);
                for src in [nested, paren, neg, chain, union, calls, iifs] {
                    if let Ok(e) = Expression::parse(&src) {
                        let _ = e.evaluate(&p);
                    }
                }
            }
        })
        .expect("spawn");
    h.join().expect("no stack overflow / panic");
}

#[test]
fn weird_values_do_not_panic() {
    let p = patient();
    for src in [
        "9223372036854775807 + 1",
        "-9223372036854775807 - 10",
        "9223372036854775807 * 2",
        "1 / 0",
        "1 div 0",
        "1 mod 0",
        "79228162514264337593543950335.0 + 79228162514264337593543950335.0",
        "0.0000000000000000000000000001.lowBoundary()",
        "79228162514264337593543950335.highBoundary()",
        "@2014-01-01 + 99999999999999 years",
        "@2014-01-01 + 9223372036854775807 days",
        "@T10:00 + 9223372036854775807 'ms'",
        "'abc'.substring(-5, 9223372036854775807)",
        "'abc'.matches('(')",
        "'x'.power(2)",
        "2.power(99999)",
        "(-8).power(0.5)",
        "(0).ln()",
        "1.round(-1)",
        "1.5.round(9999)",
        "'%%'.decode('hex')",
        "'é'.substring(0, 1)",
        "'é'.indexOf('')",
        "birthDate.extension.value.extension",
        "managingOrganization.resolve().name",
        "descendants().count()",
        "1.lowBoundary(99)",
        "@2014.highBoundary(17)",
        "(1 | 2).aggregate($this + $total)",
    ] {
        if let Ok(e) = Expression::parse(src) {
            let _ = e.evaluate(&p);
        }
    }
}

/// `resolve()` looks references up: many references to many contained resources (or Bundle entries) take
/// time linear in their number, and find the same resources as a scan in order would.
#[test]
fn resolve_is_linear_in_references_and_contained() {
    let n = 50_000;
    let contained: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"resourceType": "Practitioner", "id": format!("c{i}")}))
        .collect();
    let participants: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"actor": {"reference": format!("#c{}", n - 1 - i)}}))
        .collect();
    let appt = serde_json::json!({"resourceType": "Appointment", "status": "booked",
        "contained": contained, "participant": participants});
    let started = std::time::Instant::now();
    let e = Expression::parse("Appointment.participant.actor.resolve()").expect("expression");
    let found = e.evaluate(&appt).expect("évaluation");
    assert_eq!(found.len(), n);
    let e = Expression::parse("Appointment.participant.first().actor.resolve().id")
        .expect("expression");
    let first = e.evaluate(&appt).expect("évaluation");
    assert_eq!(
        format!("{first:?}").matches(&format!("c{}", n - 1)).count(),
        1,
        "{first:?}"
    );
    // A Bundle: the first entry whose fullUrl is the reference or ends with `/` and it.
    let b = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://a/fhir/Patient/1", "resource": {"resourceType": "Patient", "id": "first"}},
        {"fullUrl": "Patient/1", "resource": {"resourceType": "Patient", "id": "second"}},
        {"fullUrl": "urn:uuid:9", "resource": {"resourceType": "Patient", "id": "third"}},
        {"resource": {"resourceType": "Patient", "id": "nourl"}},
        {"fullUrl": "http://a/fhir/Composition/c", "resource": {"resourceType": "Composition", "id": "c",
            "subject": {"reference": "Patient/1"}, "author": [{"reference": "urn:uuid:9"}, {"reference": "Patient/2"}]}}]});
    for (src, want) in [
        (
            "Bundle.entry.resource.ofType(Composition).subject.resolve().id",
            "first",
        ),
        (
            "Bundle.entry.resource.ofType(Composition).author.first().resolve().id",
            "third",
        ),
    ] {
        let out = Expression::parse(src)
            .expect("expression")
            .evaluate(&b)
            .expect("évaluation");
        assert_eq!(out.len(), 1, "{src}: {out:?}");
        assert!(format!("{out:?}").contains(want), "{src}: {out:?}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
