//! BLAKE3 content addresses.
//!
//! The address of an object is the BLAKE3 of its canonical bytes (see [`crate::object`]): the
//! transfer syntax UID, a NUL, then the dataset bytes exactly as received. The same dataset sent
//! over DIMSE or read from a Part-10 file therefore dedupes to one blob.

pub type Hash = [u8; 32];

/// Hashes one buffer. Large inputs use BLAKE3's internal SIMD; callers release the GIL around it.
pub fn hash(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

pub fn to_hex(h: &Hash) -> String {
    let mut s = String::with_capacity(64);
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn from_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = hash(b"abc");
        assert_eq!(to_hex(&h), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }
}
