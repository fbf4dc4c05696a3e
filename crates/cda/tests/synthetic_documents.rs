//! Valid documents in their various shapes: namespace prefixes, extension namespaces, body
//! variants, references; and the document hashes.

mod common;

use common::{N1_BODY, N3_BODY, document, n1};
use socle_cda::{
    Body, CdaError, InsKind, InstanceId, Limits, NamePartKind, RelationType, extract_n1_body,
    hashes, parse,
};

/// Prefixes every HL7 element of `doc` with `p:` and binds the prefix instead of the default
/// namespace.
fn prefixed(doc: &str, p: &str) -> String {
    let mut out = String::new();
    let mut rest = doc;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        if tail.starts_with('?') || tail.starts_with('!') {
            out.push('<');
        } else if let Some(t) = tail.strip_prefix('/') {
            out.push_str(&format!("</{p}:"));
            rest = t;
            continue;
        } else {
            out.push_str(&format!("<{p}:"));
        }
        rest = tail;
    }
    out.push_str(rest);
    out.replace(
        "xmlns=\"urn:hl7-org:v3\"",
        &format!("xmlns:{p}=\"urn:hl7-org:v3\""),
    )
}

#[test]
fn a_prefixed_document_reads_like_the_default_namespace_one() {
    let plain = parse(n1().as_bytes(), &Limits::default()).unwrap();
    let doc = prefixed(&n1(), "hl7");
    assert!(doc.contains("<hl7:ClinicalDocument xmlns:hl7=\"urn:hl7-org:v3\""));
    assert!(doc.contains("</hl7:family>"));
    assert_eq!(parse(doc.as_bytes(), &Limits::default()).unwrap(), plain);
}

#[test]
fn the_header_is_read() {
    let doc = parse(n1().as_bytes(), &Limits::default()).unwrap();
    assert_eq!(doc.id, InstanceId::new("1.2.250.1.999.1", Some("DOC-1")));
    assert_eq!(doc.id.to_xds(), "1.2.250.1.999.1^DOC-1");
    // Predefined and character references resolved.
    assert_eq!(doc.title.as_deref(), Some("Compte rendu d'examens été"));
    let ins = doc.ins().unwrap();
    assert_eq!((ins.kind, ins.value), (InsKind::Nir, "279035121518989"));
    assert_eq!(doc.patient.names[0].given().next().unwrap().value, "Zoé");
    assert_eq!(doc.custodian.name.as_deref(), Some("Hôpital"));
    assert_eq!(doc.authors[0].assigned.idnps(), Some("810000000001"));
}

#[test]
fn extension_namespaces_are_skipped_with_their_subtree() {
    // An `id` and a `code` in another namespace (even with HL7 children) must not count as the
    // document's own.
    let extra = r#"
      <sdtc:id xmlns:sdtc="urn:hl7-org:sdtc" root="9.9.9"/>
      <lab:wrapper xmlns:lab="urn:oid:1.3.6.1.4.1.19376.1.3.2">
        <id xmlns="urn:hl7-org:v3" root="8.8.8"/>
        <code xmlns="urn:hl7-org:v3" code="X" codeSystem="Y"/>
      </lab:wrapper>"#;
    let doc = parse(document(extra, N1_BODY).as_bytes(), &Limits::default()).unwrap();
    assert_eq!(doc.id.root, "1.2.250.1.999.1");
    assert_eq!(doc.code.code, "11502-2");
    // An HL7 element that redeclares the HL7 namespace itself is read like any other.
    let redeclared = document(
        "<relatedDocument xmlns=\"urn:hl7-org:v3\" typeCode=\"APND\"><parentDocument><id root=\"7.7\"/></parentDocument></relatedDocument>",
        N1_BODY,
    );
    let doc = parse(redeclared.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(doc.related_documents[0].type_code, RelationType::Append);
    assert_eq!(
        doc.related_documents[0].parent_ids,
        [InstanceId::new("7.7", None)]
    );
}

#[test]
fn the_optional_header_parts() {
    let extra = r#"
      <author>
        <time value="2024"/>
        <assignedAuthor>
          <id root="1.2.250.1.71.4.2.1" extension="899999999999"/>
          <code code="G15_10/SM26" codeSystem="1.2.250.1.213.1.1.4.5"/>
          <assignedPerson><name><prefix>Dr</prefix><given>Jean</given><family>DUPONT</family></name></assignedPerson>
          <representedOrganization><id root="1.2.250.1.71.4.2.2" extension="2"/><name>  Clinique  </name></representedOrganization>
        </assignedAuthor>
      </author>
      <legalAuthenticator><time value="20240105"/><signatureCode code="S"/>
        <assignedEntity><id root="1.2.250.1.71.4.2.1" extension="899999999999"/></assignedEntity>
      </legalAuthenticator>
      <inFulfillmentOf><order><id root="1.2.3.4.5" extension="ORD-1"/></order></inFulfillmentOf>
      <documentationOf><serviceEvent><code code="A" codeSystem="S"/><effectiveTime value="20240101"/></serviceEvent></documentationOf>
      <documentationOf><serviceEvent><effectiveTime><low value="20240101"/><high nullFlavor="UNK"/></effectiveTime>
        <performer typeCode="PRF"><assignedEntity><id root="1.2.250.1.71.4.2.1" extension="1"/></assignedEntity></performer>
      </serviceEvent></documentationOf>
      <relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.250.1.999.0" extension="DOC-0"/><setId root="x"/></parentDocument></relatedDocument>
      <componentOf><encompassingEncounter>
        <effectiveTime><low value="20240101"/><high value="20240103"/></effectiveTime>
        <location><healthCareFacility><code code="SA01" codeSystem="1.2.250.1.71.4.2.4"/>
          <location><name>Service de biologie</name></location></healthCareFacility></location>
      </encompassingEncounter></componentOf>"#;
    let doc = parse(document(extra, N3_BODY).as_bytes(), &Limits::default()).unwrap();
    assert_eq!(doc.authors.len(), 2);
    let author = &doc.authors[1];
    assert_eq!(
        author
            .time
            .as_ref()
            .unwrap()
            .parsed
            .as_ref()
            .unwrap()
            .to_iso8601(),
        "2024"
    );
    let name = &author.assigned.names[0];
    let kinds: Vec<_> = name.parts.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            NamePartKind::Prefix,
            NamePartKind::Given,
            NamePartKind::Family
        ]
    );
    assert_eq!(
        author
            .assigned
            .organization
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("Clinique")
    );
    assert_eq!(
        doc.in_fulfillment_of,
        [InstanceId::new("1.2.3.4.5", Some("ORD-1"))]
    );
    assert_eq!(doc.service_events.len(), 2);
    assert_eq!(
        doc.service_events[0]
            .effective_time
            .value
            .as_ref()
            .unwrap()
            .raw,
        "20240101"
    );
    assert_eq!(doc.service_events[1].effective_time.high, None);
    assert_eq!(
        doc.service_events[1].performers[0].ids,
        [InstanceId::new("1.2.250.1.71.4.2.1", Some("1"))]
    );
    assert_eq!(
        doc.related_documents[0].parent_ids,
        [InstanceId::new("1.2.250.1.999.0", Some("DOC-0"))]
    );
    let encounter = doc.encompassing_encounter.unwrap();
    assert_eq!(encounter.facility_code.unwrap().code, "SA01");
    assert_eq!(
        encounter.location_name.as_deref(),
        Some("Service de biologie")
    );
    assert_eq!(encounter.effective_time.high.unwrap().raw, "20240103");
    match doc.body {
        Body::Structured {
            section_count,
            section_codes,
        } => {
            assert_eq!(section_count, 2);
            assert_eq!(section_codes.len(), 1);
            assert_eq!(section_codes[0].code, "10164-2");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn n1_body_extraction() {
    let limits = Limits::default();
    // Whitespace inside the base64 is tolerated.
    let (media_type, data) = extract_n1_body(n1().as_bytes(), &limits).unwrap().unwrap();
    assert_eq!(media_type, "application/pdf");
    assert_eq!(data, b"%PDF-1.4 test");
    let doc = parse(n1().as_bytes(), &limits).unwrap();
    assert_eq!(
        doc.body,
        Body::NonXml {
            media_type: Some("application/pdf".into()),
            representation: Some("B64".into()),
            bytes_base64_len: 20,
            compression: None,
        }
    );

    // Unpadded base64 is accepted.
    let unpadded = n1().replace("LjQgdGVzdA==", "LjQgdGVzdA");
    assert_eq!(
        extract_n1_body(unpadded.as_bytes(), &limits)
            .unwrap()
            .unwrap()
            .1,
        b"%PDF-1.4 test"
    );
    // Plain text representation, default media type.
    let txt = document(
        "",
        "<component><nonXMLBody><text>Bonjour &amp; merci</text></nonXMLBody></component>",
    );
    assert_eq!(
        extract_n1_body(txt.as_bytes(), &limits).unwrap(),
        Some(("text/plain".to_string(), b"Bonjour & merci".to_vec()))
    );
    // Structured body: nothing to extract.
    assert_eq!(
        extract_n1_body(document("", N3_BODY).as_bytes(), &limits).unwrap(),
        None
    );
    // Invalid base64.
    let bad = n1().replace("JVBERi0x", "JVB*Ri0x");
    assert!(matches!(
        extract_n1_body(bad.as_bytes(), &limits),
        Err(CdaError::InvalidBase64(_))
    ));
    // A reference instead of inline content.
    let reference = document(
        "",
        "<component><nonXMLBody><text mediaType=\"application/pdf\" representation=\"B64\"><reference value=\"http://x/y.pdf\"/></text></nonXMLBody></component>",
    );
    assert_eq!(
        extract_n1_body(reference.as_bytes(), &limits),
        Err(CdaError::EmptyNonXmlBody)
    );
    // Compressed, or another representation.
    let compressed = n1().replace(
        "representation=\"B64\"",
        "representation=\"B64\" compression=\"DF\"",
    );
    assert_eq!(
        extract_n1_body(compressed.as_bytes(), &limits),
        Err(CdaError::UnsupportedCompression("DF".into()))
    );
    let other = n1().replace("representation=\"B64\"", "representation=\"HEX\"");
    assert_eq!(
        extract_n1_body(other.as_bytes(), &limits),
        Err(CdaError::UnsupportedRepresentation("HEX".into()))
    );
    // The extraction refuses what `parse` refuses.
    let dtd = n1().replace("<ClinicalDocument", "<!DOCTYPE x>\n<ClinicalDocument");
    assert!(matches!(
        extract_n1_body(dtd.as_bytes(), &limits),
        Err(CdaError::Xml(socle_cda::XmlError::DoctypeForbidden))
    ));
}

#[test]
fn hashes_match_independent_values() {
    // Reference values from coreutils: `printf 'Socle CDA' | sha1sum` and `| sha256sum`.
    let h = hashes(b"Socle CDA");
    assert_eq!(h.sha1_hex, "e3308c501e9816949e5e48dad7674ce6569d4531");
    assert_eq!(
        h.sha256_hex,
        "84145a0121f347bd5a470302ed28b25238d56627fcd9ed465048e42c548a792b"
    );
    assert_eq!(h.size, 9);
    let empty = hashes(b"");
    assert_eq!(empty.sha1_hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_eq!(
        empty.sha256_hex,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(empty.size, 0);
}

#[test]
fn xds_identifiers_round_trip() {
    for s in ["1.2.3", "1.2.3^ABC"] {
        assert_eq!(InstanceId::from_xds(s).to_xds(), s);
    }
    assert_eq!(
        InstanceId::from_xds("1.2.3^"),
        InstanceId::new("1.2.3", None)
    );
}
