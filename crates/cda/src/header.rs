//! Reads the CDA R2 header from the safe XML item stream into a [`CdaDocument`].
//!
//! Owns the mapping from element paths to header fields and the header's structural rules
//! (required elements, elements that must be unique). Must not touch raw XML: everything arrives
//! through `xml::SafeReader`, already checked.
//!
//! Streaming, not a tree: memory stays proportional to what is kept (the header fields), whatever
//! the size of the body. Elements outside the HL7 v3 namespace (`sdtc:`, `lab:`, `pharm:`…) are
//! skipped with their whole subtree.

use crate::error::{CdaError, XmlError};
use crate::limits::{Limit, Limits};
use crate::model::{
    Actor, Author, BirthPlace, Body, CdaDocument, Coded, Encounter, InstanceId, Interval,
    LegalAuthenticator, NamePart, NamePartKind, Organization, Patient, PersonName, RelatedDocument,
    RelationType, ServiceEvent,
};
use crate::time::HlTime;
use crate::xml::{Element, Item, SafeReader};

/// The HL7 v3 namespace, the CDA R2 namespace.
pub const HL7_V3_NAMESPACE: &str = "urn:hl7-org:v3";

const CD: &str = "ClinicalDocument";

/// Inline content of a level-1 body, as read.
pub(crate) struct NonXmlText {
    pub text: String,
    pub compression: Option<String>,
}

/// The header, plus the level-1 body's content when asked for.
pub(crate) struct Parsed {
    pub doc: CdaDocument,
    pub non_xml_text: Option<NonXmlText>,
}

/// Parses `bytes`; keeps the level-1 body text only if `keep_non_xml_text`.
pub(crate) fn parse(
    bytes: &[u8],
    limits: &Limits,
    keep_non_xml_text: bool,
) -> Result<Parsed, CdaError> {
    let mut reader = SafeReader::new(bytes, limits, HL7_V3_NAMESPACE, CD)?
        .with_wrapper(XSLT_NAMESPACE, "stylesheet");
    let mut builder = Builder::new(limits, keep_non_xml_text);
    // In an auto-présentable document, the elements around the ClinicalDocument (the stylesheet) are skipped:
    // `inside` is the depth within the ClinicalDocument (`None`: outside it), `found` whether it was met.
    let mut inside: Option<usize> = None;
    let mut found = false;
    loop {
        let item = reader.next_item()?;
        if !reader.wrapped() {
            match item {
                Item::Start(element) => builder.start(&element)?,
                Item::Text(text) => builder.text(&text),
                Item::End => builder.end()?,
                Item::Eof => break,
            }
            continue;
        }
        match (item, inside) {
            (Item::Start(element), None) if element.in_ns && element.local == CD => {
                if found {
                    return Err(CdaError::DuplicateElement(CD));
                }
                found = true;
                inside = Some(0);
                builder.start(&element)?;
            }
            (Item::Start(element), Some(d)) => {
                inside = Some(d + 1);
                builder.start(&element)?;
            }
            (Item::Text(text), Some(_)) => builder.text(&text),
            (Item::End, Some(d)) => {
                builder.end()?;
                inside = d.checked_sub(1);
            }
            (Item::Eof, _) => break,
            _ => {}
        }
    }
    if reader.wrapped() && !found {
        return Err(CdaError::MissingElement(CD));
    }
    builder.finish()
}

/// The namespace of XSLT: an auto-présentable CDA document is a stylesheet wrapping its ClinicalDocument.
const XSLT_NAMESPACE: &str = "http://www.w3.org/1999/XSL/Transform";

/// What a visit sees: an element opening, or its captured text when it closes.
enum Ev<'e> {
    Start(&'e Element),
    End(&'e str),
}

impl<'e> Ev<'e> {
    fn start(&self) -> Option<&'e Element> {
        match self {
            Ev::Start(e) => Some(e),
            Ev::End(_) => None,
        }
    }
}

/// The header under construction.
#[derive(Default)]
struct Partial {
    /// Unique elements already met.
    seen: Vec<&'static str>,
    realm_code: Option<String>,
    type_id: Option<InstanceId>,
    template_ids: Vec<InstanceId>,
    id: Option<InstanceId>,
    code: Option<Coded>,
    title: Option<String>,
    effective_time: Option<HlTime>,
    confidentiality_code: Option<Coded>,
    language_code: Option<String>,
    set_id: Option<InstanceId>,
    version_number: Option<u32>,
    patient: Patient,
    authors: Vec<Author>,
    custodian: Organization,
    legal_authenticator: Option<LegalAuthenticator>,
    service_events: Vec<ServiceEvent>,
    encounter: Option<Encounter>,
    in_fulfillment_of: Vec<InstanceId>,
    related_documents: Vec<RelatedDocument>,
    body: Option<Body>,
    non_xml_compression: Option<String>,
}

impl Partial {
    fn once(&mut self, what: &'static str) -> Result<(), CdaError> {
        if self.seen.contains(&what) {
            return Err(CdaError::DuplicateElement(what));
        }
        self.seen.push(what);
        Ok(())
    }
}

struct Builder<'l> {
    limits: &'l Limits,
    keep_non_xml_text: bool,
    /// Path of HL7 element names from the root, interned.
    path: Vec<&'static str>,
    /// Depth inside a skipped foreign subtree (0: not in one).
    foreign: usize,
    /// Text being collected: (path length of the element, text so far).
    captures: Vec<(usize, String)>,
    in_non_xml_text: bool,
    non_xml_len: usize,
    non_xml_text: Option<String>,
    /// The base64 check of a `B64` level-1 body, fed as its text streams past.
    b64: Option<crate::b64::Check>,
    d: Partial,
}

/// Path of `nonXMLBody/text`.
const NON_XML_TEXT: [&str; 4] = [CD, "component", "nonXMLBody", "text"];

impl<'l> Builder<'l> {
    fn new(limits: &'l Limits, keep_non_xml_text: bool) -> Self {
        Self {
            limits,
            keep_non_xml_text,
            path: Vec::new(),
            foreign: 0,
            captures: Vec::new(),
            in_non_xml_text: false,
            non_xml_len: 0,
            non_xml_text: None,
            b64: None,
            d: Partial::default(),
        }
    }

    fn start(&mut self, element: &Element) -> Result<(), CdaError> {
        if self.foreign > 0 || !element.in_ns {
            self.foreign += 1;
            return Ok(());
        }
        self.path.push(intern(&element.local));
        if self.path.as_slice() == NON_XML_TEXT {
            self.in_non_xml_text = true;
            if self.keep_non_xml_text && self.non_xml_text.is_none() {
                self.non_xml_text = Some(String::new());
            }
        }
        if visit(&self.path, &mut self.d, &Ev::Start(element), self.limits)? {
            self.captures.push((self.path.len(), String::new()));
        }
        if self.path.as_slice() == NON_XML_TEXT
            && matches!(&self.d.body, Some(Body::NonXml { representation: Some(r), .. }) if r == "B64")
        {
            self.b64 = Some(crate::b64::Check::default());
        }
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if self.foreign > 0 {
            return;
        }
        if self.in_non_xml_text && self.path.len() == NON_XML_TEXT.len() {
            self.non_xml_len += non_whitespace_len(text);
            if let Some(check) = self.b64.as_mut() {
                check.feed(text);
            }
            if let Some(buf) = self.non_xml_text.as_mut() {
                buf.push_str(text);
            }
            return;
        }
        if let Some((depth, buf)) = self.captures.last_mut()
            && *depth == self.path.len()
        {
            buf.push_str(text);
        }
    }

    fn end(&mut self) -> Result<(), CdaError> {
        if self.foreign > 0 {
            self.foreign -= 1;
            return Ok(());
        }
        let depth = self.path.len();
        if self.captures.last().is_some_and(|(d, _)| *d == depth)
            && let Some((_, text)) = self.captures.pop()
        {
            visit(&self.path, &mut self.d, &Ev::End(&text), self.limits)?;
        }
        if self.path.as_slice() == NON_XML_TEXT {
            self.in_non_xml_text = false;
            if let Some(check) = self.b64.take() {
                check.finish().map_err(CdaError::InvalidBase64)?;
            }
            if let Some(Body::NonXml {
                bytes_base64_len,
                compression,
                ..
            }) = self.d.body.as_mut()
            {
                *bytes_base64_len = self.non_xml_len;
                *compression = self.d.non_xml_compression.clone();
            }
        }
        self.path.pop();
        Ok(())
    }

    fn finish(self) -> Result<Parsed, CdaError> {
        let d = self.d;
        let id = d.id.ok_or(CdaError::MissingElement("id"))?;
        let code = d.code.ok_or(CdaError::MissingElement("code"))?;
        let effective_time = d
            .effective_time
            .ok_or(CdaError::MissingElement("effectiveTime"))?;
        let confidentiality_code = d
            .confidentiality_code
            .ok_or(CdaError::MissingElement("confidentialityCode"))?;
        if !d.seen.contains(&"patientRole") {
            return Err(CdaError::MissingElement("recordTarget/patientRole"));
        }
        if d.authors.is_empty() {
            return Err(CdaError::MissingElement("author"));
        }
        if !d.seen.contains(&"representedCustodianOrganization") {
            return Err(CdaError::MissingElement(
                "custodian/assignedCustodian/representedCustodianOrganization",
            ));
        }
        let body = d.body.ok_or(CdaError::MissingElement(
            "component/structuredBody|nonXMLBody",
        ))?;
        let non_xml_text = self.non_xml_text.map(|text| NonXmlText {
            text,
            compression: d.non_xml_compression.clone(),
        });
        Ok(Parsed {
            doc: CdaDocument {
                realm_code: d.realm_code,
                type_id: d.type_id,
                template_ids: d.template_ids,
                id,
                code,
                title: d.title,
                effective_time,
                confidentiality_code,
                language_code: d.language_code,
                set_id: d.set_id,
                version_number: d.version_number,
                patient: d.patient,
                authors: d.authors,
                custodian: d.custodian,
                legal_authenticator: d.legal_authenticator,
                service_events: d.service_events,
                encompassing_encounter: d.encounter,
                in_fulfillment_of: d.in_fulfillment_of,
                related_documents: d.related_documents,
                body,
            },
            non_xml_text,
        })
    }
}

/// Maps an element name to the static name used in path patterns; names no pattern uses become
/// `"?"` (not a valid XML name, so it matches nothing).
fn intern(name: &str) -> &'static str {
    const NAMES: &[&str] = &[
        CD,
        "realmCode",
        "typeId",
        "templateId",
        "id",
        "code",
        "title",
        "effectiveTime",
        "confidentialityCode",
        "languageCode",
        "setId",
        "versionNumber",
        "recordTarget",
        "patientRole",
        "patient",
        "name",
        "family",
        "given",
        "prefix",
        "suffix",
        "administrativeGenderCode",
        "birthTime",
        "birthplace",
        "place",
        "addr",
        "city",
        "postalCode",
        "county",
        "country",
        "author",
        "time",
        "assignedAuthor",
        "assignedPerson",
        "representedOrganization",
        "custodian",
        "assignedCustodian",
        "representedCustodianOrganization",
        "legalAuthenticator",
        "signatureCode",
        "assignedEntity",
        "documentationOf",
        "serviceEvent",
        "low",
        "high",
        "performer",
        "componentOf",
        "encompassingEncounter",
        "location",
        "healthCareFacility",
        "inFulfillmentOf",
        "order",
        "relatedDocument",
        "parentDocument",
        "component",
        "nonXMLBody",
        "text",
        "structuredBody",
        "section",
    ];
    NAMES.iter().find(|n| **n == name).copied().unwrap_or("?")
}

/// Handles one element of the header; returns whether its text must be captured (it is then
/// visited again with `Ev::End(text)` when it closes).
fn visit(p: &[&str], d: &mut Partial, ev: &Ev<'_>, lim: &Limits) -> Result<bool, CdaError> {
    let start = ev.start();
    match (p, start) {
        ([CD, "realmCode"], Some(el)) => {
            keep_first(&mut d.realm_code, || el.attr("code").map(str::to_string));
        }
        ([CD, "typeId"], Some(el)) => {
            d.once("typeId")?;
            d.type_id = ii(el);
        }
        ([CD, "templateId"], Some(el)) => {
            push_ii(&mut d.template_ids, el, lim)?;
        }
        ([CD, "id"], Some(el)) => {
            d.once("id")?;
            d.id = Some(required_ii(el, "id")?);
        }
        ([CD, "code"], Some(el)) => {
            d.once("code")?;
            let code = required_code(el, "code")?;
            if code.code_system.is_none() {
                return Err(CdaError::MissingAttribute {
                    element: "code",
                    attribute: "codeSystem",
                });
            }
            d.code = Some(code);
        }
        ([CD, "title"], Some(_)) => {
            d.once("title")?;
            return Ok(true);
        }
        ([CD, "title"], None) => d.title = end_text(ev),
        ([CD, "effectiveTime"], Some(el)) => {
            d.once("effectiveTime")?;
            let raw = el.attr("value").ok_or(CdaError::MissingAttribute {
                element: "effectiveTime",
                attribute: "value",
            })?;
            let time = HlTime::new(raw);
            if time.parsed.is_none() {
                return Err(CdaError::InvalidEffectiveTime(raw.to_string()));
            }
            d.effective_time = Some(time);
        }
        ([CD, "confidentialityCode"], Some(el)) => {
            d.once("confidentialityCode")?;
            d.confidentiality_code = Some(required_code(el, "confidentialityCode")?);
        }
        ([CD, "languageCode"], Some(el)) => {
            d.once("languageCode")?;
            d.language_code = el.attr("code").map(str::to_string);
        }
        ([CD, "setId"], Some(el)) => {
            d.once("setId")?;
            d.set_id = Some(required_ii(el, "setId")?);
        }
        ([CD, "versionNumber"], Some(el)) => {
            d.once("versionNumber")?;
            let raw = el.attr("value").ok_or(CdaError::MissingAttribute {
                element: "versionNumber",
                attribute: "value",
            })?;
            match raw.trim().parse::<u32>() {
                Ok(v) if v > 0 && raw.trim().bytes().all(|b| b.is_ascii_digit()) => {
                    d.version_number = Some(v);
                }
                _ => return Err(CdaError::InvalidVersionNumber(raw.to_string())),
            }
        }
        ([CD, "recordTarget"], Some(_)) => d.once("recordTarget")?,
        ([CD, "recordTarget", "patientRole"], Some(_)) => d.once("patientRole")?,
        ([CD, "recordTarget", "patientRole", rest @ ..], _) => {
            return patient(rest, &mut d.patient, ev, lim);
        }
        ([CD, "author"], Some(_)) => push(&mut d.authors, Author::default(), lim)?,
        ([CD, "author", "time"], Some(el)) => {
            if let Some(author) = d.authors.last_mut() {
                author.time = time(el);
            }
        }
        ([CD, "author", "assignedAuthor", rest @ ..], _) => {
            if let Some(author) = d.authors.last_mut() {
                return actor(rest, &mut author.assigned, ev, lim);
            }
        }
        ([CD, "custodian"], Some(_)) => d.once("custodian")?,
        (
            [
                CD,
                "custodian",
                "assignedCustodian",
                "representedCustodianOrganization",
                rest @ ..,
            ],
            _,
        ) => {
            if rest.is_empty() && start.is_some() {
                d.once("representedCustodianOrganization")?;
            }
            return organization(rest, &mut d.custodian, ev, lim);
        }
        ([CD, "legalAuthenticator"], Some(_)) => {
            d.once("legalAuthenticator")?;
            d.legal_authenticator = Some(LegalAuthenticator::default());
        }
        ([CD, "legalAuthenticator", rest @ ..], _) => {
            if let Some(legal) = d.legal_authenticator.as_mut() {
                match (rest, start) {
                    (["time"], Some(el)) => legal.time = time(el),
                    (["signatureCode"], Some(el)) => {
                        legal.signature_code = el.attr("code").map(str::to_string);
                    }
                    (["assignedEntity", rest @ ..], _) => {
                        return actor(rest, &mut legal.assigned, ev, lim);
                    }
                    _ => {}
                }
            }
        }
        ([CD, "documentationOf", "serviceEvent"], Some(_)) => {
            push(&mut d.service_events, ServiceEvent::default(), lim)?;
        }
        ([CD, "documentationOf", "serviceEvent", rest @ ..], _) => {
            if let Some(event) = d.service_events.last_mut() {
                return service_event(rest, event, ev, lim);
            }
        }
        ([CD, "componentOf"], Some(_)) => d.once("componentOf")?,
        ([CD, "componentOf", "encompassingEncounter"], Some(_)) => {
            d.once("encompassingEncounter")?;
            d.encounter = Some(Encounter::default());
        }
        ([CD, "componentOf", "encompassingEncounter", rest @ ..], _) => {
            if let Some(encounter) = d.encounter.as_mut() {
                return encompassing_encounter(rest, encounter, ev, lim);
            }
        }
        ([CD, "inFulfillmentOf", "order", "id"], Some(el)) => {
            push_ii(&mut d.in_fulfillment_of, el, lim)?;
        }
        ([CD, "relatedDocument"], Some(el)) => {
            let type_code = match el.attr("typeCode") {
                Some("RPLC") => RelationType::Replace,
                Some("APND") => RelationType::Append,
                Some("XFRM") => RelationType::Transform,
                other => RelationType::Other(other.unwrap_or_default().to_string()),
            };
            let related = RelatedDocument {
                type_code,
                parent_ids: Vec::new(),
            };
            push(&mut d.related_documents, related, lim)?;
        }
        ([CD, "relatedDocument", "parentDocument", "id"], Some(el)) => {
            if let (Some(related), Some(id)) = (d.related_documents.last_mut(), ii(el)) {
                push(&mut related.parent_ids, id, lim)?;
            }
        }
        ([CD, "component"], Some(_)) => d.once("component")?,
        ([CD, "component", "nonXMLBody"], Some(_)) => {
            d.once("component/structuredBody|nonXMLBody")?;
            d.body = Some(Body::NonXml {
                media_type: None,
                representation: None,
                bytes_base64_len: 0,
                compression: None,
            });
        }
        ([CD, "component", "nonXMLBody", "text"], Some(el)) => {
            d.once("nonXMLBody/text")?;
            if let Some(Body::NonXml {
                media_type,
                representation,
                ..
            }) = d.body.as_mut()
            {
                *media_type = el.attr("mediaType").map(str::to_string);
                *representation = el.attr("representation").map(str::to_string);
            }
            d.non_xml_compression = el.attr("compression").map(str::to_string);
        }
        ([CD, "component", "structuredBody"], Some(_)) => {
            d.once("component/structuredBody|nonXMLBody")?;
            d.body = Some(Body::Structured {
                section_count: 0,
                section_codes: Vec::new(),
            });
        }
        ([CD, "component", "structuredBody", "component", "section"], Some(_)) => {
            if let Some(Body::Structured { section_count, .. }) = d.body.as_mut() {
                *section_count += 1;
                if *section_count > lim.max_list_items {
                    return Err(list_limit(lim));
                }
            }
        }
        (
            [
                CD,
                "component",
                "structuredBody",
                "component",
                "section",
                "code",
            ],
            Some(el),
        ) => {
            if let (Some(Body::Structured { section_codes, .. }), Some(code)) =
                (d.body.as_mut(), coded(el))
            {
                push(section_codes, code, lim)?;
            }
        }
        _ => {}
    }
    Ok(false)
}

/// `recordTarget/patientRole/…`
fn patient(r: &[&str], p: &mut Patient, ev: &Ev<'_>, lim: &Limits) -> Result<bool, CdaError> {
    let start = ev.start();
    match (r, start) {
        (["id"], Some(el)) => {
            push_ii(&mut p.ids, el, lim)?;
        }
        (["patient", "name", rest @ ..], _) => return names(rest, &mut p.names, ev, lim),
        (["patient", "administrativeGenderCode"], Some(el)) => {
            keep_first(&mut p.administrative_gender, || coded(el));
        }
        (["patient", "birthTime"], Some(el)) => {
            keep_first(&mut p.birth_time, || time(el));
        }
        (["patient", "birthplace", "place"], Some(_)) => {
            p.birth_place.get_or_insert_with(BirthPlace::default);
        }
        (["patient", "birthplace", "place", field @ ..], _) => {
            if let Some(place) = p.birth_place.as_mut() {
                let slot = match field {
                    ["name"] => &mut place.name,
                    ["addr", "city"] => &mut place.city,
                    ["addr", "postalCode"] => &mut place.postal_code,
                    ["addr", "county"] => &mut place.county,
                    ["addr", "country"] => &mut place.country,
                    _ => return Ok(false),
                };
                match ev {
                    Ev::Start(_) => return Ok(slot.is_none()),
                    Ev::End(_) => *slot = end_text(ev),
                }
            }
        }
        _ => {}
    }
    Ok(false)
}

/// `…/name/…` where several names may follow each other.
fn names(
    r: &[&str],
    list: &mut Vec<PersonName>,
    ev: &Ev<'_>,
    lim: &Limits,
) -> Result<bool, CdaError> {
    match (r, ev) {
        ([], Ev::Start(el)) => {
            let name = PersonName {
                use_code: el.attr("use").map(str::to_string),
                ..PersonName::default()
            };
            push(list, name, lim)?;
            return Ok(true);
        }
        ([], Ev::End(_)) => {
            if let Some(name) = list.last_mut() {
                name.text = end_text(ev);
            }
        }
        ([part], Ev::Start(el)) => {
            let kind = match *part {
                "family" => NamePartKind::Family,
                "given" => NamePartKind::Given,
                "prefix" => NamePartKind::Prefix,
                "suffix" => NamePartKind::Suffix,
                _ => return Ok(false),
            };
            if let Some(name) = list.last_mut() {
                let part = NamePart {
                    kind,
                    value: String::new(),
                    qualifier: el.attr("qualifier").map(str::to_string),
                };
                push(&mut name.parts, part, lim)?;
                return Ok(true);
            }
        }
        ([_], Ev::End(_)) => {
            if let Some(part) = list.last_mut().and_then(|n| n.parts.last_mut()) {
                part.value = end_text(ev).unwrap_or_default();
            }
        }
        _ => {}
    }
    Ok(false)
}

/// `assignedAuthor/…`, `assignedEntity/…`
fn actor(r: &[&str], a: &mut Actor, ev: &Ev<'_>, lim: &Limits) -> Result<bool, CdaError> {
    match (r, ev.start()) {
        (["id"], Some(el)) => {
            push_ii(&mut a.ids, el, lim)?;
        }
        (["code"], Some(el)) => {
            keep_first(&mut a.code, || coded(el));
        }
        (["assignedPerson", "name", rest @ ..], _) => return names(rest, &mut a.names, ev, lim),
        (["representedOrganization", rest @ ..], _) => {
            let org = a.organization.get_or_insert_with(Organization::default);
            return organization(rest, org, ev, lim);
        }
        _ => {}
    }
    Ok(false)
}

/// `…Organization/…`
fn organization(
    r: &[&str],
    o: &mut Organization,
    ev: &Ev<'_>,
    lim: &Limits,
) -> Result<bool, CdaError> {
    match (r, ev) {
        (["id"], Ev::Start(el)) => {
            push_ii(&mut o.ids, el, lim)?;
        }
        (["name"], Ev::Start(_)) => return Ok(o.name.is_none()),
        (["name"], Ev::End(_)) => o.name = end_text(ev),
        _ => {}
    }
    Ok(false)
}

/// `documentationOf/serviceEvent/…`
fn service_event(
    r: &[&str],
    s: &mut ServiceEvent,
    ev: &Ev<'_>,
    lim: &Limits,
) -> Result<bool, CdaError> {
    match (r, ev.start()) {
        (["code"], Some(el)) => {
            keep_first(&mut s.code, || coded(el));
        }
        (["effectiveTime", rest @ ..], Some(el)) => interval(rest, &mut s.effective_time, el),
        (["performer"], Some(_)) => push(&mut s.performers, Actor::default(), lim)?,
        (["performer", "assignedEntity", rest @ ..], _) => {
            if let Some(performer) = s.performers.last_mut() {
                return actor(rest, performer, ev, lim);
            }
        }
        _ => {}
    }
    Ok(false)
}

/// `componentOf/encompassingEncounter/…`
fn encompassing_encounter(
    r: &[&str],
    e: &mut Encounter,
    ev: &Ev<'_>,
    lim: &Limits,
) -> Result<bool, CdaError> {
    match (r, ev) {
        (["id"], Ev::Start(el)) => {
            push_ii(&mut e.ids, el, lim)?;
        }
        (["code"], Ev::Start(el)) => {
            keep_first(&mut e.code, || coded(el));
        }
        (["effectiveTime", rest @ ..], Ev::Start(el)) => interval(rest, &mut e.effective_time, el),
        (["location", "healthCareFacility", "id"], Ev::Start(el)) => {
            push_ii(&mut e.facility_ids, el, lim)?;
        }
        (["location", "healthCareFacility", "code"], Ev::Start(el)) => {
            keep_first(&mut e.facility_code, || coded(el));
        }
        (["location", "healthCareFacility", "location", "name"], Ev::Start(_)) => {
            return Ok(e.location_name.is_none());
        }
        (["location", "healthCareFacility", "location", "name"], Ev::End(_)) => {
            e.location_name = end_text(ev);
        }
        _ => {}
    }
    Ok(false)
}

/// `effectiveTime` (`@value`) and its `low` / `high`.
fn interval(r: &[&str], i: &mut Interval, el: &Element) {
    let slot = match r {
        [] => &mut i.value,
        ["low"] => &mut i.low,
        ["high"] => &mut i.high,
        _ => return,
    };
    keep_first(slot, || time(el));
}

/// Sets `slot` unless already set: the first occurrence wins for repeatable sub-elements.
fn keep_first<T>(slot: &mut Option<T>, value: impl FnOnce() -> Option<T>) {
    if slot.is_none() {
        *slot = value();
    }
}

fn push<T>(list: &mut Vec<T>, item: T, lim: &Limits) -> Result<(), CdaError> {
    if list.len() >= lim.max_list_items {
        return Err(list_limit(lim));
    }
    list.push(item);
    Ok(())
}

fn list_limit(lim: &Limits) -> CdaError {
    CdaError::Xml(XmlError::LimitExceeded {
        limit: Limit::MaxListItems,
        max: lim.max_list_items,
    })
}

/// Captured text, trimmed; `None` if empty.
fn end_text(ev: &Ev<'_>) -> Option<String> {
    match ev {
        Ev::End(text) => {
            let t = text.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        Ev::Start(_) => None,
    }
}

fn non_empty<'e>(el: &'e Element, name: &str) -> Option<&'e str> {
    el.attr(name).filter(|v| !v.trim().is_empty())
}

/// An `II`; `None` without a root (e.g. a `nullFlavor`).
/// Appends the element's instance identifier, if it has a `root` (a null-flavoured id carries none).
fn push_ii(list: &mut Vec<InstanceId>, el: &Element, lim: &Limits) -> Result<(), CdaError> {
    match ii(el) {
        Some(id) => push(list, id, lim),
        None => Ok(()),
    }
}

fn ii(el: &Element) -> Option<InstanceId> {
    let root = non_empty(el, "root")?;
    Some(InstanceId::new(root, el.attr("extension")))
}

fn required_ii(el: &Element, element: &'static str) -> Result<InstanceId, CdaError> {
    ii(el).ok_or(CdaError::MissingAttribute {
        element,
        attribute: "root",
    })
}

/// A coded value; `None` without a code (e.g. a `nullFlavor`).
fn coded(el: &Element) -> Option<Coded> {
    let code = non_empty(el, "code")?;
    Some(Coded {
        code: code.to_string(),
        code_system: el.attr("codeSystem").map(str::to_string),
        display_name: el.attr("displayName").map(str::to_string),
    })
}

fn required_code(el: &Element, element: &'static str) -> Result<Coded, CdaError> {
    coded(el).ok_or(CdaError::MissingAttribute {
        element,
        attribute: "code",
    })
}

fn time(el: &Element) -> Option<HlTime> {
    el.attr("value").map(HlTime::new)
}

/// The number of bytes of `text` that are not ASCII whitespace (the length of a base64 body without its line
/// breaks). A level-1 body is ~130 KB of base64 in lines of 76: the whitespace is counted in 8-bit sums over
/// runs of at most 255 bytes, which the compiler vectorises (6× a byte-by-byte filter here).
fn non_whitespace_len(text: &str) -> usize {
    let whitespace: usize = text
        .as_bytes()
        .chunks(255)
        .map(|run| {
            let n: u8 = run
                .iter()
                .map(|&b| u8::from(matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)))
                .sum();
            usize::from(n)
        })
        .sum();
    text.len() - whitespace
}

#[cfg(test)]
mod tests {
    use super::non_whitespace_len;

    #[test]
    fn non_whitespace_len_counts_as_byte_by_byte() {
        let naive = |t: &str| t.bytes().filter(|b| !b.is_ascii_whitespace()).count();
        let base64_line =
            "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZUR";
        let mut cases = vec![
            String::new(),
            " ".into(),
            "\t\n\r\x0c ".into(),
            "é€😀 a".into(),
            base64_line.repeat(40),
            "\x01\x1f!".into(),
        ];
        // Whitespace of every kind at every position around the 255-byte runs' edges, and runs all whitespace.
        cases.push(" \n".repeat(300));
        for ws in [' ', '\t', '\n', '\r', '\x0c'] {
            for at in [0, 1, 62, 63, 64, 65, 127, 128, 200, 254, 255, 256] {
                let mut t: String = base64_line.repeat(4);
                t.insert(at, ws);
                cases.push(t);
            }
        }
        for t in &cases {
            assert_eq!(non_whitespace_len(t), naive(t), "{t:?}");
        }
    }
}
