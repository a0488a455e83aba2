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

/// Bytes hashed and then checksummed while they are still in cache (see [`hash_and_crc`]).
const FUSED_PIECE: usize = 64 << 10;

/// BLAKE3 of `parts` joined, and the CRC-32 of the same bytes, in one pass over memory: each
/// 64 KiB piece is checksummed right after it is hashed. Why: a volume record's crc covers its
/// stored bytes (store/record.rs), which for a raw object are exactly the hashed bytes, and a
/// second pass over objects that are no longer in cache cost ~9 % of a tmpfs ingest (perf).
///
/// The pieces end at multiples of 64 KiB of the joined bytes, not of each part: BLAKE3 takes a
/// whole aligned power-of-two run of 1 KiB chunks in one SIMD call (`hash_many`), but a piece
/// that starts mid-chunk (a raw object is `transfer syntax + NUL` then the dataset, so every
/// piece of the dataset did) is hashed as a ragged edge of single chunks, one block at a time,
/// at every piece boundary: 12 % more CPU for the hash of a 512 KiB CT slice.
pub fn hash_and_crc(parts: &[&[u8]]) -> (Hash, u32) {
    let mut h = blake3::Hasher::new();
    let mut c = crc32fast::Hasher::new();
    for_each_piece(parts, |piece| {
        h.update(piece);
        c.update(piece);
    });
    (*h.finalize().as_bytes(), c.finalize())
}

/// Calls `f` on `parts` in order, cut so that every piece ends at a multiple of [`FUSED_PIECE`]
/// of the joined bytes or at the end of a part.
fn for_each_piece(parts: &[&[u8]], mut f: impl FnMut(&[u8])) {
    let mut at = 0usize;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            let take = (FUSED_PIECE - at % FUSED_PIECE).min(rest.len());
            let (piece, tail) = rest.split_at(take);
            f(piece);
            at += take;
            rest = tail;
        }
    }
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
    fn fused_hash_and_crc_match_separate_passes() {
        let a: Vec<u8> = (0..200_001u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let b = b"tail".to_vec();
        let mut joined = a.clone();
        joined.extend_from_slice(&b);
        assert_eq!(hash_and_crc(&[&a, &b]), (hash(&joined), crc32fast::hash(&joined)));
        assert_eq!(hash_and_crc(&[]), (hash(b""), 0));
    }

    #[test]
    fn fused_pieces_across_part_boundaries_hash_the_joined_bytes() {
        // A raw object's parts: a short head, then a dataset that starts mid-chunk and crosses
        // several piece boundaries; also parts that end exactly on one, and empty parts.
        let data: Vec<u8> = (0..(3 * FUSED_PIECE + 4_321) as u32).map(|i| (i * 31 + i / 977) as u8).collect();
        for split in [0, 1, 20, 1024, FUSED_PIECE - 1, FUSED_PIECE, FUSED_PIECE + 1, data.len()] {
            let (head, rest) = data.split_at(split);
            let (mid, tail) = rest.split_at(rest.len() / 2);
            let want = (hash(&data), crc32fast::hash(&data));
            assert_eq!(hash_and_crc(&[head, rest]), want, "split at {split}");
            assert_eq!(hash_and_crc(&[head, &[], mid, tail]), want, "split at {split} in three");
        }
    }

    #[test]
    fn fused_pieces_end_on_piece_boundaries_of_the_joined_bytes() {
        let head = [1u8; 20];
        let dataset = vec![2u8; 3 * FUSED_PIECE + 100];
        let mut ends = Vec::new();
        let mut at = 0;
        for_each_piece(&[&head, &dataset], |p| {
            at += p.len();
            ends.push(at);
        });
        let total = head.len() + dataset.len();
        assert_eq!(ends, vec![20, FUSED_PIECE, 2 * FUSED_PIECE, 3 * FUSED_PIECE, total]);
    }

    #[test]
    fn hex_round_trip() {
        let h = hash(b"abc");
        assert_eq!(to_hex(&h), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }
}
