//! C-FIND response identifiers: the elements of one match, written from the index's text values.
//!
//! The requested keys of a query are fixed for all its matches, so their tag (and VR) bytes are
//! prepared once ([`IdentifierKey`]); each match then only supplies values. A 120-match answer
//! spent more time building these elements in Python than finding the matches.

/// One element of every identifier of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierKey {
    /// Tag bytes, then (explicit VR) the VR and, for long VRs, two reserved bytes.
    pub head: Vec<u8>,
    /// The length field has 4 bytes (implicit VR, or an explicit long VR), else 2.
    pub long_length: bool,
    /// Appended to a value of odd length (PS3.5 6.2: NUL for UI, space for text).
    pub pad: u8,
}

/// Largest even length a 2-byte length field holds.
const MAX_SHORT: usize = 0xFFFE;

/// Appends one element: header, length, value, padding to even length. A value too long for a
/// 2-byte length (not a valid value for any VR that has one) is cut to fit rather than
/// corrupting the data set.
pub fn push_element(out: &mut Vec<u8>, key: &IdentifierKey, value: &[u8]) {
    let value = if !key.long_length && value.len() > MAX_SHORT { &value[..MAX_SHORT] } else { value };
    let odd = value.len() % 2;
    let len = value.len() + odd;
    out.extend_from_slice(&key.head);
    if key.long_length {
        out.extend_from_slice(&(len as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    if odd == 1 {
        out.push(key.pad);
    }
}

/// `prefix` (e.g. the Specific Character Set element) followed by one element per key.
pub fn encode_identifier<'a>(
    prefix: &[u8],
    keys: &[IdentifierKey],
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + keys.len() * 24);
    out.extend_from_slice(prefix);
    for (key, value) in keys.iter().zip(values) {
        push_element(&mut out, key, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(head: &[u8], long_length: bool, pad: u8) -> IdentifierKey {
        IdentifierKey { head: head.to_vec(), long_length, pad }
    }

    #[test]
    fn elements_are_padded_and_length_prefixed() {
        let ui = key(b"\x20\x00\x0d\x00UI", false, 0);
        let pn = key(b"\x10\x00\x10\x00PN", false, b' ');
        let implicit = key(b"\x08\x00\x61\x00", true, b' ');
        let out = encode_identifier(b"P", &[ui, pn, implicit], [&b"1.2.3"[..], b"", b"CT"]);
        assert_eq!(
            out,
            [
                &b"P"[..],
                b"\x20\x00\x0d\x00UI\x06\x001.2.3\x00",
                b"\x10\x00\x10\x00PN\x00\x00",
                b"\x08\x00\x61\x00\x02\x00\x00\x00CT",
            ]
            .concat()
        );
    }

    #[test]
    fn a_value_too_long_for_a_short_length_is_cut() {
        let lo = key(b"\x08\x00\x30\x10LO", false, b' ');
        let long = vec![b'a'; 70_001];
        let out = encode_identifier(b"", &[lo], [&long[..]]);
        assert_eq!(&out[6..8], &0xFFFEu16.to_le_bytes());
        assert_eq!(out.len(), 8 + MAX_SHORT);
        let ut = key(b"\x08\x00\x30\x10UT\x00\x00", true, b' ');
        let out = encode_identifier(b"", &[ut], [&long[..]]);
        assert_eq!(out.len(), 12 + 70_002);
    }
}
