//! Safe XML event reading over untrusted bytes.
//!
//! Owns the well-formedness and safety rules shared by every XML input of this crate (CDA
//! documents, CI-SIS value sets): size, depth, attribute and text limits, UTF-8 only, no DTD,
//! only the predefined entities, a small allow-list of processing instructions, one root element
//! in an expected namespace. It knows nothing of CDA: callers receive a simplified stream of
//! start / text / end items and give them meaning.

use std::borrow::Cow;

use quick_xml::NsReader;
use quick_xml::errors::{Error as QxError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use crate::error::XmlError;
use crate::limits::{Limit, Limits};

/// Processing instructions that real documents carry and that are inert for a reader: the
/// stylesheet association (CDA documents name their XSL rendering) and the oXygen editor's
/// schema associations, present in every official CI-SIS example.
const ALLOWED_PI_TARGETS: &[&str] = &["xml-stylesheet", "oxygen"];

/// An element start, with its namespace reduced to "is it the namespace the caller reads".
#[derive(Debug)]
pub(crate) struct Element {
    /// The element is in the caller's namespace.
    pub in_ns: bool,
    /// Local name (prefix removed).
    pub local: String,
    /// Unprefixed attributes (name, unescaped value). Prefixed ones (`xsi:type`, `xmlns:*`…) are
    /// checked but not kept: CDA's own attributes are never prefixed.
    attrs: Vec<(String, String)>,
}

impl Element {
    /// Value of an unprefixed attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One step of the document.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    Start(Element),
    /// Text content (a piece of a text node: text, CDATA or a resolved reference).
    Text(Cow<'a, str>),
    End,
    Eof,
}

/// Pull reader enforcing the rules above.
pub(crate) struct SafeReader<'a> {
    reader: NsReader<&'a [u8]>,
    limits: Limits,
    namespace: &'static str,
    root: &'static str,
    /// Bytes removed at the front (a UTF-8 byte-order mark), to report input offsets.
    offset: u64,
    depth: usize,
    /// Namespace declarations made by each open element, and their sum (see [`Limits::max_namespaces`]).
    namespaces: Vec<usize>,
    namespaces_in_scope: usize,
    seen_root: bool,
    /// Another root accepted: (namespace, local name) of an element wrapping the expected one.
    wrapper: Option<(&'static str, &'static str)>,
    /// The root is that wrapper.
    wrapped: bool,
    root_closed: bool,
    first_event: bool,
    pending_end: bool,
    text_len: usize,
    done: bool,
}

impl<'a> SafeReader<'a> {
    /// Checks the input as a whole (size, encoding, characters) and prepares to read it.
    /// `namespace` and `root` name the only root element accepted.
    pub fn new(
        bytes: &'a [u8],
        limits: &Limits,
        namespace: &'static str,
        root: &'static str,
    ) -> Result<Self, XmlError> {
        if bytes.len() > limits.max_bytes {
            return Err(XmlError::LimitExceeded {
                limit: Limit::MaxBytes,
                max: limits.max_bytes,
            });
        }
        if bytes.starts_with(&[0x00, 0x00, 0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE, 0, 0]) {
            return Err(XmlError::UnsupportedEncoding("UTF-32".into()));
        }
        if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
            return Err(XmlError::UnsupportedEncoding("UTF-16".into()));
        }
        let (body, offset) = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
            Some(rest) => (rest, 3usize),
            None => (bytes, 0),
        };
        if let Err(e) = std::str::from_utf8(body) {
            return Err(XmlError::InvalidUtf8 {
                position: e.valid_up_to() + offset,
            });
        }
        check_characters(body, offset)?;

        let mut reader = NsReader::from_reader(body);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.allow_unmatched_ends = false;
        config.allow_dangling_amp = false;
        config.expand_empty_elements = false;
        config.trim_text_start = false;
        config.trim_text_end = false;
        Ok(Self {
            reader,
            limits: *limits,
            namespace,
            root,
            offset: offset as u64,
            depth: 0,
            namespaces: Vec::new(),
            namespaces_in_scope: 0,
            seen_root: false,
            wrapper: None,
            wrapped: false,
            root_closed: false,
            first_event: true,
            pending_end: false,
            text_len: 0,
            done: false,
        })
    }

    /// Also accepts as root the element `local` of `namespace`, which wraps the expected root somewhere inside
    /// (e.g. a CDA "auto-présentable": an XSLT stylesheet carrying the document it displays).
    pub fn with_wrapper(mut self, namespace: &'static str, local: &'static str) -> Self {
        self.wrapper = Some((namespace, local));
        self
    }

    /// Whether the root is the wrapper ([`SafeReader::with_wrapper`]); known once the root is read.
    pub fn wrapped(&self) -> bool {
        self.wrapped
    }

    /// Current nesting depth (the root element is at depth 1).
    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The next item. After `Eof` or an error, keeps returning `Eof`.
    pub fn next_item(&mut self) -> Result<Item<'a>, XmlError> {
        if self.done {
            return Ok(Item::Eof);
        }
        let result = self.read_item();
        if result.is_err() {
            self.done = true;
        }
        result
    }

    fn read_item(&mut self) -> Result<Item<'a>, XmlError> {
        loop {
            if self.pending_end {
                self.pending_end = false;
                return Ok(self.close_element());
            }
            let (resolved, event) = match self.reader.read_resolved_event() {
                Ok((res, ev)) => (classify(&res, self.namespace), ev),
                Err(e) => return Err(self.map_error(e)),
            };
            let first = std::mem::replace(&mut self.first_event, false);
            match event {
                Event::Decl(decl) => {
                    if !first {
                        return Err(XmlError::MisplacedDeclaration);
                    }
                    match decl.encoding() {
                        None => {}
                        Some(Ok(enc)) if !enc.eq_ignore_ascii_case(b"utf-8") => {
                            return Err(XmlError::UnsupportedEncoding(
                                String::from_utf8_lossy(&enc).into_owned(),
                            ));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(self.malformed(e.to_string())),
                    }
                }
                Event::PI(pi) => {
                    let target = String::from_utf8_lossy(pi.target()).into_owned();
                    if !ALLOWED_PI_TARGETS.contains(&target.as_str()) {
                        return Err(XmlError::ProcessingInstructionForbidden(target));
                    }
                }
                Event::DocType(_) => return Err(XmlError::DoctypeForbidden),
                Event::Comment(_) => {}
                Event::Start(start) => return self.open_element(&start, resolved, false),
                Event::Empty(start) => return self.open_element(&start, resolved, true),
                Event::End(_) => return Ok(self.close_element()),
                Event::Text(text) => {
                    let s = text
                        .xml10_content()
                        .map_err(|e| self.malformed(e.to_string()))?;
                    if let Some(item) = self.text(s)? {
                        return Ok(item);
                    }
                }
                Event::CData(cdata) => {
                    let s = cdata
                        .xml10_content()
                        .map_err(|e| self.malformed(e.to_string()))?;
                    if self.depth == 0 {
                        return Err(XmlError::TextOutsideRoot);
                    }
                    if let Some(item) = self.text(s)? {
                        return Ok(item);
                    }
                }
                Event::GeneralRef(reference) => {
                    let name = String::from_utf8_lossy(&reference).into_owned();
                    let ch = resolve_reference(&name)?;
                    if self.depth == 0 {
                        return Err(XmlError::TextOutsideRoot);
                    }
                    if let Some(item) = self.text(Cow::Owned(ch.to_string()))? {
                        return Ok(item);
                    }
                }
                Event::Eof => {
                    if !self.seen_root {
                        return Err(XmlError::NoRootElement);
                    }
                    if self.depth > 0 {
                        return Err(XmlError::Truncated);
                    }
                    self.done = true;
                    return Ok(Item::Eof);
                }
            }
        }
    }

    fn open_element(
        &mut self,
        start: &BytesStart<'_>,
        resolved: Resolved,
        empty: bool,
    ) -> Result<Item<'a>, XmlError> {
        if self.root_closed {
            return Err(XmlError::ContentAfterRoot);
        }
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(XmlError::LimitExceeded {
                limit: Limit::MaxDepth,
                max: self.limits.max_depth,
            });
        }
        self.text_len = 0;
        let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
        let in_ns = match resolved {
            Resolved::Ours => true,
            Resolved::Other(_) | Resolved::None => false,
            Resolved::UnknownPrefix(prefix) => return Err(XmlError::UndeclaredPrefix(prefix)),
        };
        if !self.seen_root {
            self.seen_root = true;
            match resolved {
                Resolved::Ours if local == self.root => {}
                Resolved::Other(ref ns)
                    if self
                        .wrapper
                        .is_some_and(|(w_ns, w_local)| ns == w_ns && local == w_local) =>
                {
                    self.wrapped = true;
                }
                Resolved::Ours => {
                    return Err(XmlError::WrongRootElement {
                        expected: self.root,
                        found: local,
                        namespace: self.namespace.to_string(),
                    });
                }
                Resolved::Other(ns) => {
                    return Err(XmlError::WrongNamespace {
                        element: local,
                        expected: self.namespace,
                        found: ns,
                    });
                }
                _ => {
                    return Err(XmlError::WrongNamespace {
                        element: local,
                        expected: self.namespace,
                        found: "(aucun)".into(),
                    });
                }
            }
        }
        let attrs = self.attributes(start)?;
        let declared = start
            .attributes()
            .filter_map(Result::ok)
            .filter(|a| a.key.as_namespace_binding().is_some())
            .count();
        self.namespaces.push(declared);
        self.namespaces_in_scope += declared;
        if self.namespaces_in_scope > self.limits.max_namespaces {
            return Err(XmlError::LimitExceeded {
                limit: Limit::MaxNamespaces,
                max: self.limits.max_namespaces,
            });
        }
        if empty {
            self.pending_end = true;
        }
        Ok(Item::Start(Element {
            in_ns,
            local,
            attrs,
        }))
    }

    fn attributes(&self, start: &BytesStart<'_>) -> Result<Vec<(String, String)>, XmlError> {
        let mut kept = Vec::new();
        for (count, attr) in start.attributes().enumerate() {
            if count >= self.limits.max_attributes {
                return Err(XmlError::LimitExceeded {
                    limit: Limit::MaxAttributes,
                    max: self.limits.max_attributes,
                });
            }
            let attr = attr.map_err(|e| self.malformed(e.to_string()))?;
            let raw = std::str::from_utf8(&attr.value).map_err(|_| XmlError::InvalidUtf8 {
                position: self.position() as usize,
            })?;
            let value = unescape_attribute(raw).map_err(|e| match e {
                XmlError::Malformed { detail, .. } => self.malformed(detail),
                other => other,
            })?;
            if attr.key.as_namespace_binding().is_some() {
                continue;
            }
            match attr.key.prefix() {
                None => kept.push((
                    String::from_utf8_lossy(attr.key.as_ref()).into_owned(),
                    value.into_owned(),
                )),
                Some(_) => {
                    let (res, _) = self.reader.resolver().resolve_attribute(attr.key);
                    if let ResolveResult::Unknown(prefix) = res {
                        return Err(XmlError::UndeclaredPrefix(
                            String::from_utf8_lossy(&prefix).into_owned(),
                        ));
                    }
                }
            }
        }
        Ok(kept)
    }

    fn close_element(&mut self) -> Item<'a> {
        self.depth = self.depth.saturating_sub(1);
        if let Some(n) = self.namespaces.pop() {
            self.namespaces_in_scope -= n;
        }
        self.text_len = 0;
        if self.depth == 0 {
            self.root_closed = true;
        }
        Item::End
    }

    /// Accounts for a piece of text; `None` when it is ignorable whitespace outside the root.
    fn text(&mut self, s: Cow<'a, str>) -> Result<Option<Item<'a>>, XmlError> {
        if self.depth == 0 {
            if s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                return Ok(None);
            }
            return Err(XmlError::TextOutsideRoot);
        }
        self.text_len = self.text_len.saturating_add(s.len());
        if self.text_len > self.limits.max_text_bytes {
            return Err(XmlError::LimitExceeded {
                limit: Limit::MaxTextBytes,
                max: self.limits.max_text_bytes,
            });
        }
        Ok(Some(Item::Text(s)))
    }

    fn position(&self) -> u64 {
        self.reader.buffer_position() + self.offset
    }

    fn malformed(&self, detail: String) -> XmlError {
        XmlError::Malformed {
            position: self.position(),
            detail,
        }
    }

    fn map_error(&self, error: QxError) -> XmlError {
        match error {
            QxError::Syntax(
                SyntaxError::UnclosedTag
                | SyntaxError::UnclosedComment
                | SyntaxError::UnclosedCData
                | SyntaxError::UnclosedPI
                | SyntaxError::UnclosedXmlDecl
                | SyntaxError::UnclosedDoctype
                | SyntaxError::UnclosedSingleQuotedAttributeValue
                | SyntaxError::UnclosedDoubleQuotedAttributeValue,
            )
            | QxError::IllFormed(IllFormedError::UnclosedReference) => XmlError::Truncated,
            other => XmlError::Malformed {
                position: self.reader.error_position() + self.offset,
                detail: other.to_string(),
            },
        }
    }
}

/// Namespace of an element, as far as the caller cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolved {
    Ours,
    Other(String),
    None,
    UnknownPrefix(String),
}

fn classify(res: &ResolveResult<'_>, namespace: &str) -> Resolved {
    match res {
        ResolveResult::Bound(ns) if ns.as_ref() == namespace.as_bytes() => Resolved::Ours,
        ResolveResult::Bound(ns) => Resolved::Other(String::from_utf8_lossy(ns.as_ref()).into()),
        ResolveResult::Unbound => Resolved::None,
        ResolveResult::Unknown(prefix) => {
            Resolved::UnknownPrefix(String::from_utf8_lossy(prefix).into_owned())
        }
    }
}

/// Refuses the characters XML 1.0 excludes: C0 controls other than tab, newline and carriage
/// return, and U+FFFE / U+FFFF (the input is already known to be UTF-8).
fn check_characters(body: &[u8], offset: usize) -> Result<(), XmlError> {
    // Most of a document (a level-1 body is base64) has no byte that could start an excluded character:
    // such blocks are skipped after a check the compiler vectorises; the others are examined byte by byte.
    const BLOCK: usize = 64;
    let suspicious = |b: u8| (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r') || b == 0xEF;
    for (k, block) in body.chunks(BLOCK).enumerate() {
        if block.iter().fold(false, |any, &b| any | suspicious(b)) {
            let start = k * BLOCK;
            check_bytes(body, start, start + block.len(), offset)?;
        }
    }
    Ok(())
}

/// [`check_characters`] on `body[from..to]`, byte by byte (a character may continue past `to`).
fn check_bytes(body: &[u8], from: usize, to: usize, offset: usize) -> Result<(), XmlError> {
    for (i, &b) in body.iter().enumerate().take(to).skip(from) {
        if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
            return Err(XmlError::IllegalCharacter {
                position: i + offset,
                code: u32::from(b),
            });
        }
        if b == 0xEF
            && body.get(i + 1) == Some(&0xBF)
            && matches!(body.get(i + 2), Some(0xBE | 0xBF))
        {
            let code = if body.get(i + 2) == Some(&0xBE) {
                0xFFFE
            } else {
                0xFFFF
            };
            return Err(XmlError::IllegalCharacter {
                position: i + offset,
                code,
            });
        }
    }
    Ok(())
}

/// Whether XML 1.0 allows the character in a document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Resolves the content of `&…;`: the five predefined entities and character references only.
fn resolve_reference(name: &str) -> Result<char, XmlError> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix('x') {
            Some(hex) if !hex.is_empty() && hex.len() <= 8 => u32::from_str_radix(hex, 16).ok(),
            Some(_) => None,
            None if !number.is_empty() && number.len() <= 10 => number.parse::<u32>().ok(),
            None => None,
        };
        return match code.and_then(char::from_u32) {
            Some(c) if is_xml_char(c) => Ok(c),
            _ => Err(XmlError::InvalidCharacterReference(name.to_string())),
        };
    }
    match name {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(XmlError::UndeclaredEntity(name.to_string())),
    }
}

/// Attribute-value normalisation (XML 1.0 §3.3.3 for CDATA attributes) with the same reference
/// rules as text; a literal `<` is refused. `Malformed` errors carry no position: the caller
/// sets it.
fn unescape_attribute(raw: &str) -> Result<Cow<'_, str>, XmlError> {
    if !raw.contains(['&', '<', '\t', '\n', '\r']) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        match c {
            '&' => {
                let Some(end) = rest.find(';') else {
                    return Err(XmlError::Malformed {
                        position: 0,
                        detail: format!(
                            "référence non terminée dans une valeur d'attribut : « {} »",
                            rest.chars().take(20).collect::<String>()
                        ),
                    });
                };
                out.push(resolve_reference(&rest[1..end])?);
                rest = &rest[end + 1..];
                continue;
            }
            '<' => {
                return Err(XmlError::Malformed {
                    position: 0,
                    detail: "caractère « < » dans une valeur d'attribut".into(),
                });
            }
            '\r' => {
                out.push(' ');
                if rest[1..].starts_with('\n') {
                    rest = &rest[1..];
                }
            }
            '\t' | '\n' => out.push(' '),
            other => out.push(other),
        }
        rest = &rest[c.len_utf8()..];
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "urn:test";

    fn read_all(xml: &str) -> Result<Vec<String>, XmlError> {
        let limits = Limits::default();
        let mut r = SafeReader::new(xml.as_bytes(), &limits, NS, "r")?;
        let mut out = Vec::new();
        loop {
            match r.next_item()? {
                Item::Start(e) => {
                    out.push(format!("<{}{}", if e.in_ns { "" } else { "!" }, e.local))
                }
                Item::Text(t) => out.push(t.into_owned()),
                Item::End => out.push(format!("/{}", r.depth())),
                Item::Eof => return Ok(out),
            }
        }
    }

    #[test]
    fn predefined_and_character_references_are_resolved() {
        let out = read_all(r#"<r xmlns="urn:test">a&amp;b&#233;&#x41;</r>"#).unwrap();
        assert_eq!(out.concat(), "<ra&béA/0");
    }

    #[test]
    fn attribute_values_are_unescaped_and_normalised() {
        assert_eq!(unescape_attribute("a&lt;b&#x20;c").unwrap(), "a<b c");
        assert_eq!(unescape_attribute("a\r\nb\tc").unwrap(), "a b c");
        assert!(
            matches!(unescape_attribute("&foo;"), Err(XmlError::UndeclaredEntity(n)) if n == "foo")
        );
        assert!(unescape_attribute("a<b").is_err());
        assert!(unescape_attribute("a&b").is_err());
    }

    #[test]
    fn character_references_must_name_xml_characters() {
        for bad in [
            "#0",
            "#x0",
            "#xD800",
            "#x110000",
            "#",
            "#x",
            "#1a",
            "#99999999999",
        ] {
            assert!(
                matches!(
                    resolve_reference(bad),
                    Err(XmlError::InvalidCharacterReference(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn foreign_elements_are_flagged() {
        let out =
            read_all(r#"<t:r xmlns:t="urn:test" xmlns:x="urn:x"><x:e/><t:f/></t:r>"#).unwrap();
        assert_eq!(out, vec!["<r", "<!e", "/1", "<f", "/1", "/0"]);
    }

    #[test]
    fn unknown_pi_and_misplaced_declaration_are_refused() {
        assert_eq!(
            read_all(r#"<?php echo 1?><r xmlns="urn:test"/>"#),
            Err(XmlError::ProcessingInstructionForbidden("php".into()))
        );
        assert_eq!(
            read_all(r#"<r xmlns="urn:test"><?xml version="1.0"?></r>"#),
            Err(XmlError::MisplacedDeclaration)
        );
        assert!(
            read_all(r#"<?xml version="1.0"?><?xml-stylesheet href="a"?><r xmlns="urn:test"/>"#)
                .is_ok()
        );
    }

    #[test]
    fn content_outside_the_root_is_refused() {
        assert_eq!(
            read_all(r#"x<r xmlns="urn:test"/>"#),
            Err(XmlError::TextOutsideRoot)
        );
        assert_eq!(
            read_all(r#"<r xmlns="urn:test"/><r xmlns="urn:test"/>"#),
            Err(XmlError::ContentAfterRoot)
        );
        assert!(read_all("<r xmlns=\"urn:test\"/>\n<!-- c -->\n").is_ok());
    }

    #[test]
    fn undeclared_prefixes_are_refused() {
        assert_eq!(
            read_all(r#"<r xmlns="urn:test"><q:e/></r>"#),
            Err(XmlError::UndeclaredPrefix("q".into()))
        );
        assert_eq!(
            read_all(r#"<r xmlns="urn:test" q:a="1"/>"#),
            Err(XmlError::UndeclaredPrefix("q".into()))
        );
    }

    #[test]
    fn excluded_characters_found_at_every_position() {
        for len in [0usize, 1, 63, 64, 65, 130] {
            for at in 0..len.saturating_sub(2) {
                for (bad, code) in [
                    (&[0x01u8][..], 1u32),
                    (&[0xEF, 0xBF, 0xBE][..], 0xFFFE),
                    (&[0xEF, 0xBF, 0xBF][..], 0xFFFF),
                ] {
                    let mut body = vec![b'A'; len];
                    if at + bad.len() > len {
                        continue;
                    }
                    body[at..at + bad.len()].copy_from_slice(bad);
                    assert_eq!(
                        check_characters(&body, 10),
                        Err(XmlError::IllegalCharacter {
                            position: at + 10,
                            code
                        }),
                        "len {len} at {at}"
                    );
                }
            }
            // Allowed: tabs, newlines, other characters starting with 0xEF (U+FFFD).
            let mut ok = vec![b'\n'; len];
            if len >= 3 {
                ok[len - 3..].copy_from_slice(&[0xEF, 0xBF, 0xBD]);
            }
            assert_eq!(check_characters(&ok, 0), Ok(()));
        }
    }
}
