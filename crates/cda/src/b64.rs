//! A streaming check that a level-1 body's text is base64, as [`crate::extract_n1_body`] decodes it (standard
//! alphabet, whitespace anywhere, padding optional but only at the end, no stray bits in the last symbol),
//! without decoding: the header reader runs it on every `B64` body, so that a document whose body cannot be
//! served is refused when it is submitted rather than found unreadable later.

/// The check's state across the text events of one body.
#[derive(Debug, Default)]
pub(crate) struct Check {
    /// Alphabet symbols seen.
    symbols: usize,
    /// `=` seen (padding).
    pad: usize,
    /// The last alphabet symbol.
    last: u8,
    /// The first fault found.
    fault: Option<String>,
}

fn is_symbol(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// Symbols, whitespace and `=` in `bytes`, counted without branches (runs of 255 keep the sums in bytes,
/// which vectorises).
fn counts(bytes: &[u8]) -> (usize, usize, usize) {
    let (mut symbols, mut spaces, mut pads) = (0usize, 0usize, 0usize);
    for run in bytes.chunks(255) {
        let (mut s, mut w, mut p) = (0u8, 0u8, 0u8);
        for &b in run {
            s += u8::from(is_symbol(b));
            w += u8::from(is_space(b));
            p += u8::from(b == b'=');
        }
        symbols += usize::from(s);
        spaces += usize::from(w);
        pads += usize::from(p);
    }
    (symbols, spaces, pads)
}

fn value(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        _ => 63,
    }
}

impl Check {
    /// Takes the next piece of the body's text.
    pub(crate) fn feed(&mut self, text: &str) {
        if self.fault.is_some() {
            return;
        }
        let bytes = text.as_bytes();
        let (symbols, spaces, pads) = counts(bytes);
        if symbols + spaces + pads == bytes.len() {
            // Only base64's characters: the common case, a whole body or a line of it. Symbols must all come
            // before the first `=`, this piece's or an earlier one's.
            // The first `=`, found from the end (padding ends the text: a short walk back).
            let mut first_pad = bytes.len();
            let mut seen = 0;
            for (i, &b) in bytes.iter().enumerate().rev() {
                if seen == pads {
                    break;
                }
                if b == b'=' {
                    seen += 1;
                    first_pad = i;
                }
            }
            let (head, tail) = bytes.split_at(first_pad);
            if (self.pad > 0 && symbols > 0) || counts(tail).0 > 0 {
                self.fault = Some("données après le remplissage « = »".into());
                return;
            }
            self.symbols += symbols;
            self.pad += pads;
            if let Some(&b) = head.iter().rev().find(|&&b| is_symbol(b)) {
                self.last = b;
            }
            return;
        }
        // Another character somewhere: found and named, one character at a time.
        for c in text.chars() {
            match c {
                '=' => self.pad += 1,
                c if c.is_ascii() && is_space(c as u8) => {}
                c if c.is_ascii() && is_symbol(c as u8) => {
                    if self.pad > 0 {
                        self.fault = Some("données après le remplissage « = »".into());
                        return;
                    }
                    self.symbols += 1;
                    self.last = c as u8;
                }
                c => {
                    self.fault = Some(format!(
                        "caractère « {} » (U+{:04X}) hors de l'alphabet base64",
                        c.escape_default(),
                        u32::from(c)
                    ));
                    return;
                }
            }
        }
    }

    /// The verdict once the body's text has ended.
    pub(crate) fn finish(self) -> Result<(), String> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        let bad_pad = || {
            Err(format!(
                "{} « = » de remplissage pour {} symboles",
                self.pad, self.symbols
            ))
        };
        match self.symbols % 4 {
            0 if self.pad > 0 => bad_pad(),
            1 => Err(format!(
                "{} symboles : une longueur que le base64 ne peut avoir (tronqué ?)",
                self.symbols
            )),
            2 if self.pad > 2 => bad_pad(),
            3 if self.pad > 1 => bad_pad(),
            2 if value(self.last) & 0x0f != 0 => {
                Err("bits superflus non nuls dans le dernier symbole".into())
            }
            3 if value(self.last) & 0x03 != 0 => {
                Err("bits superflus non nuls dans le dernier symbole".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn verdict(pieces: &[&str]) -> Result<(), String> {
        let mut c = Check::default();
        for p in pieces {
            c.feed(p);
        }
        c.finish()
    }

    /// What the decoder of `extract_n1_body` says of the same text (whitespace removed first, as it does).
    fn decodes(text: &str) -> bool {
        let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        crate::BASE64.decode(&compact).is_ok()
    }

    #[test]
    fn agrees_with_the_decoder_on_hard_cases() {
        for text in [
            "",
            "QQ==",
            "QQ=",
            "QQ",
            "QUI=",
            "QUI",
            "QUJD",
            "Q",
            "QR==",
            "QUJ=",
            "QUJDRA==\n",
            " Q U J D ",
            "QU=JD",
            "QUJD====",
            "QUJD=",
            "QQ==QQ==",
            "QUJD\u{e9}",
            "QUJ-",
            "QUJ_",
            "QUJD\r\nRA",
            "=",
            "==",
            "Q===",
        ] {
            assert_eq!(
                verdict(&[text]).is_ok(),
                decodes(text),
                "{text:?}: {:?}",
                verdict(&[text])
            );
        }
    }

    #[test]
    fn pieces_are_one_text() {
        assert!(verdict(&["QUJ", "DRA", "==", "\n"]).is_ok());
        assert!(verdict(&["QQ=", "=QQ"]).is_err());
        assert!(verdict(&["QQ==", " \n "]).is_ok());
        let e = verdict(&["QUJD", "Q!"]).unwrap_err();
        assert!(e.contains("« ! »"), "{e}");
    }

    proptest! {
        /// Any bytes, encoded and cut into pieces with line breaks, pass.
        #[test]
        fn encoded_bytes_pass(data in proptest::collection::vec(any::<u8>(), 0..300),
                              width in 1usize..80, cut in 1usize..50, pad in any::<bool>()) {
            let mut text = if pad {
                base64::engine::general_purpose::STANDARD.encode(&data)
            } else {
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&data)
            };
            text = text.as_bytes().chunks(width).map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>().join("\n");
            let pieces: Vec<String> = text.as_bytes().chunks(cut)
                .map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            prop_assert!(verdict(&refs).is_ok(), "{:?}", verdict(&refs));
        }

        /// On any text, the check and the decoder agree.
        #[test]
        fn agrees_with_the_decoder(text in "[A-Za-z0-9+/= \n\u{e9}!-]{0,40}") {
            prop_assert_eq!(verdict(&[&text]).is_ok(), decodes(&text), "{:?}", text);
        }
    }
}
