//! C-FIND pending responses framed a chunk of matches at a time: index rows (the texts of the
//! requested keys) in, P-DATA-TF bytes out.
//!
//! Why: a 2,000-match IMAGE answer built its identifiers one match at a time in Python (the
//! defaults, the constant elements, the character set decision, then one native call to write
//! the elements and another to frame the message): ~1.5 µs of Python per match, about a third
//! of the server's CPU for the answer beside the index's own work. The plan of one query's
//! identifiers is fixed for all its matches, so it is built once ([`FindFrames`]) and each chunk
//! of rows becomes its pending responses in one pass. The bytes are those of
//! `dimse/find.py IdentifierEncoder.encode_values` framed by [`super::pdu::message_pdus`].

use super::identifier::{push_element, IdentifierKey};
use super::pdu::push_message_pdus;

/// One element of every response identifier of a query, in tag order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindElement {
    pub key: IdentifierKey,
    /// The index column its value comes from; None: always `fallback` (the Query/Retrieve Level,
    /// a sequence key).
    pub column: Option<usize>,
    /// The value when the column's text is empty (Retrieve AE Title: ours), or the constant.
    pub fallback: String,
    /// Written with an empty value whatever the text (sequences, binary VRs): the text still
    /// counts for the character set decision, as in `encode_values`.
    pub blank: bool,
}

/// Why a row could not be framed (the caller redoes it the slow way, which raises the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A row with a different number of values than the query has columns.
    Columns { got: usize, want: usize },
    /// An all-ASCII row, but the request's Specific Character Set cannot be written (not ASCII).
    NoRequestCharset,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Columns { got, want } => write!(f, "{got} values for {want} columns"),
            FrameError::NoRequestCharset => write!(f, "the request's Specific Character Set is not ASCII"),
        }
    }
}

/// The pending responses of one C-FIND: its identifier plan and its message framing.
#[derive(Debug, Clone)]
pub struct FindFrames {
    pub elements: Vec<FindElement>,
    /// Values per row (the query's columns).
    pub columns: usize,
    /// The Specific Character Set element of the request's character set (empty for none), put
    /// before the elements of an all-ASCII identifier; None if it cannot be written.
    pub ascii_prefix: Option<Vec<u8>>,
    /// ... and of ISO_IR 192, for an identifier with any other character.
    pub utf8_prefix: Vec<u8>,
    pub context_id: u8,
    /// The C-FIND-RSP (Pending) command set.
    pub command: Vec<u8>,
    /// The peer's maximum PDU length (0: unlimited).
    pub max_pdu: usize,
}

impl FindFrames {
    fn text<'a>(&'a self, element: &'a FindElement, values: &[&'a str]) -> &'a str {
        match element.column {
            Some(i) if !values[i].is_empty() => values[i],
            _ => &element.fallback,
        }
    }

    /// Appends the pending response of one match (`values`: its column texts) to `out`;
    /// `scratch` holds the identifier meanwhile (reused across rows).
    pub fn push(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>, values: &[&str]) -> Result<(), FrameError> {
        if values.len() != self.columns {
            return Err(FrameError::Columns { got: values.len(), want: self.columns });
        }
        // every DICOM character set writes ASCII as ASCII; anything else goes out as UTF-8
        let ascii = self.elements.iter().all(|e| self.text(e, values).is_ascii());
        let prefix = if ascii {
            self.ascii_prefix.as_deref().ok_or(FrameError::NoRequestCharset)?
        } else {
            &self.utf8_prefix
        };
        scratch.clear();
        scratch.extend_from_slice(prefix);
        for e in &self.elements {
            let value = if e.blank { "" } else { self.text(e, values) };
            push_element(scratch, &e.key, value.as_bytes());
        }
        push_message_pdus(out, self.context_id, &self.command, Some(scratch), self.max_pdu);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::identifier::encode_identifier;
    use super::super::pdu::message_pdus;
    use super::*;

    fn element(head: &[u8], column: Option<usize>, fallback: &str, blank: bool) -> FindElement {
        let pad = if head.ends_with(b"UI") { 0 } else { b' ' };
        FindElement {
            key: IdentifierKey { head: head.to_vec(), long_length: head.len() != 6, pad },
            column,
            fallback: fallback.into(),
            blank,
        }
    }

    fn frames(max_pdu: usize) -> FindFrames {
        FindFrames {
            elements: vec![
                element(b"\x08\x00\x52\x00CS", None, "IMAGE", false),
                element(b"\x08\x00\x54\x00AE", Some(0), "ARCHIVE", false),
                element(b"\x10\x00\x10\x00PN", Some(1), "", false),
                element(b"\x20\x00\x0d\x00UI", Some(2), "", false),
                element(b"\x28\x00\x10\x00OB\x00\x00", Some(3), "", true),
            ],
            columns: 4,
            ascii_prefix: Some(b"".to_vec()),
            utf8_prefix: b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 192".to_vec(),
            context_id: 3,
            command: b"CMD".to_vec(),
            max_pdu,
        }
    }

    fn one(f: &FindFrames, values: &[&str]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        f.push(&mut out, &mut Vec::new(), values)?;
        Ok(out)
    }

    #[test]
    fn defaults_constants_blanks_and_framing() {
        let f = frames(0);
        let got = one(&f, &["", "DOE^J", "1.2.3", "xx"]).unwrap();
        let want = encode_identifier(
            b"",
            &f.elements.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            [&b"IMAGE"[..], b"ARCHIVE", b"DOE^J", b"1.2.3", b""],
        );
        assert_eq!(got, message_pdus(3, b"CMD", Some(&want), 0));
    }

    #[test]
    fn any_non_ascii_text_switches_to_utf8_even_a_blanked_one() {
        let f = frames(0);
        let named = one(&f, &["", "Gérard", "1.2", ""]).unwrap();
        assert!(named.windows(10).any(|w| w == b"ISO_IR 192"));
        // the binary key's text is not written, but (as in encode_values) it decides the charset
        let blanked = one(&f, &["", "A", "1.2", "é"]).unwrap();
        assert!(blanked.windows(10).any(|w| w == b"ISO_IR 192"));
        assert!(!one(&f, &["", "A", "1.2", "e"]).unwrap().windows(10).any(|w| w == b"ISO_IR 192"));
    }

    #[test]
    fn split_to_the_peers_limit_as_message_pdus_splits() {
        let f = frames(24);
        let long = "A".repeat(301);
        let got = one(&f, &["X", &long, "1.2", ""]).unwrap();
        let ident = encode_identifier(
            b"",
            &f.elements.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            [&b"IMAGE"[..], b"X", long.as_bytes(), b"1.2", b""],
        );
        assert_eq!(got, message_pdus(3, b"CMD", Some(&ident), 24));
        assert!(got.len() > ident.len() + 6 * 10); // many PDUs
    }

    #[test]
    fn refusals() {
        let mut f = frames(0);
        assert_eq!(one(&f, &["a"]), Err(FrameError::Columns { got: 1, want: 4 }));
        f.ascii_prefix = None;
        assert_eq!(one(&f, &["", "A", "1", ""]), Err(FrameError::NoRequestCharset));
        assert!(one(&f, &["", "Ä", "1", ""]).is_ok()); // needs only the UTF-8 prefix
    }
}
