//! Small synthetic CDA documents for the tests.
#![allow(dead_code)]

/// A complete minimal header (default namespace), every required element present.
pub const HEADER: &str = r#"
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="1.2.250.1.999.1" extension="DOC-1"/>
  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="CR d'examens biologiques"/>
  <title>Compte rendu d&apos;examens &#233;t&#xE9;</title>
  <effectiveTime value="20240105101500+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="1.2.250.1.999.2"/>
  <versionNumber value="1"/>
  <recordTarget>
    <patientRole>
      <id root="1.2.250.1.213.1.4.8" extension="279035121518989"/>
      <id root="1.2.3.4" extension="IPP-42"/>
      <patient>
        <name><family qualifier="BR">MARTIN</family><given>Zoé</given></name>
        <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="19790328"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20240105101500+0100"/>
    <assignedAuthor><id root="1.2.250.1.71.4.2.1" extension="810000000001"/></assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1"/><name>Hôpital</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>"#;

/// Level-1 body: base64 of `%PDF-1.4 test`.
pub const N1_BODY: &str = r#"
  <component>
    <nonXMLBody>
      <text mediaType="application/pdf" representation="B64">JVBERi0x
        LjQgdGVzdA==</text>
    </nonXMLBody>
  </component>"#;

/// Structured body with two top-level sections.
pub const N3_BODY: &str = r#"
  <component>
    <structuredBody>
      <component><section><code code="10164-2" codeSystem="2.16.840.1.113883.6.1"/><text>a</text></section></component>
      <component><section><title>b</title></section></component>
    </structuredBody>
  </component>"#;

/// A document with `extra` appended to the header and the given body.
pub fn document(extra: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <?xml-stylesheet type=\"text/xsl\" href=\"CDA.xsl\"?>\n\
         <ClinicalDocument xmlns=\"urn:hl7-org:v3\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         {HEADER}{extra}{body}\n</ClinicalDocument>\n"
    )
}

/// The minimal N1 document.
pub fn n1() -> String {
    document("", N1_BODY)
}

/// A document whose body holds `depth` more nested elements than the minimal N3 document's
/// deepest path (`ClinicalDocument/component/structuredBody/component/section` = 5).
pub fn nested(depth: usize) -> String {
    let body = format!(
        "<component><structuredBody><component><section>{}{}</section></component></structuredBody></component>",
        "<entry>".repeat(depth),
        "</entry>".repeat(depth)
    );
    document("", &body)
}
