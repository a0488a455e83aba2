//! Moving blobs between local tiers: the copy and verify half of a move.
//!
//! A move is copy → read back and verify → index switch → free the old copy. The first two are
//! here ([`copy_verified`]); the index switch is the caller's (the RocksDB index names the tier
//! of every blob), and the old copy is freed with [`BlobStore::delete_in`] only after that
//! switch is durable. A crash at any point leaves the blob readable in at least one tier; a copy
//! the index does not name is an orphan the caller reclaims at its next start.

use crate::codec::Codec;
use crate::error::Result;
use crate::hash::Hash;
use crate::object::{decode_verified, encode_canonical};
use crate::store::{check_free_space, BlobStore, PutItem, Reserve};

/// A blob now also held by the destination tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    pub codec: u8,
    pub stored_len: u64,
    pub logical_len: u64,
}

/// Copies `hashes` from tier `from` to tier `to`, re-encoded for `target` (hot level `level`),
/// with one sync for the batch; then reads every copy back from `to` and checks it decodes to
/// its hash. One result per hash: the copy's codec and lengths, or why this blob was not copied
/// (the others go on). Refuses the whole batch, before writing, when it would leave less than
/// the `reserve` free on the destination's filesystem.
pub fn copy_verified(
    store: &BlobStore,
    hashes: &[Hash],
    from: usize,
    to: usize,
    target: Codec,
    level: i32,
    reserve: &Reserve,
) -> Result<Vec<Result<Copied>>> {
    let (src, dst) = (store.tier_at(from)?, store.tier_at(to)?);
    // The source is not hash-checked here: its record crc is checked on read, and the read back
    // below checks the whole chain (source bytes, codec, write) against the blob's address.
    let encoded: Vec<Result<(u8, Vec<u8>, u64)>> = hashes
        .iter()
        .map(|h| {
            let blob = src.get(h)?;
            let codec = Codec::from_u8(blob.codec)?;
            let (used, stored) = if codec == target {
                (codec, blob.bytes)
            } else {
                let logical = crate::codec::decode(codec, &blob.bytes, blob.logical_len as usize)?;
                encode_canonical(&logical, target, level)?
            };
            Ok((used as u8, stored, blob.logical_len))
        })
        .collect();
    let items: Vec<PutItem<'_>> = hashes
        .iter()
        .zip(&encoded)
        .filter_map(|(h, e)| e.as_ref().ok().map(|(codec, stored, n)| (h, codec, stored, n)))
        .map(|(h, codec, stored, n)| PutItem {
            hash: *h,
            codec: *codec,
            logical_len: *n,
            head: &[],
            bytes: stored,
            crc: None,
        })
        .collect();
    let incoming = items.iter().map(|i| i.stored_len()).sum();
    check_free_space(dst.path(), incoming, reserve)?;
    let outcomes = dst.put_many(&items)?;
    let fresh: Vec<Hash> =
        items.iter().zip(&outcomes).filter(|(_, o)| !o.existed).map(|(i, _)| i.hash).collect();
    drop(items);
    let results: Vec<Result<Copied>> = hashes
        .iter()
        .zip(encoded)
        .map(|(h, e)| {
            let (_, _, logical_len) = e?;
            // What the destination holds now (a copy left by an interrupted earlier move counts).
            let back = dst.get(h)?;
            decode_verified(h, Codec::from_u8(back.codec)?, &back.bytes, back.logical_len)?;
            Ok(Copied { codec: back.codec, stored_len: back.bytes.len() as u64, logical_len })
        })
        .collect();
    // A copy this call wrote that does not verify must not stay behind as a second version.
    let bad: Vec<Hash> = hashes
        .iter()
        .zip(&results)
        .filter(|(h, r)| r.is_err() && fresh.contains(h))
        .map(|(h, _)| *h)
        .collect();
    if !bad.is_empty() {
        dst.delete_many(&bad)?;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::prepare_file_with;
    use crate::parse::INDEX_TAGS;
    use crate::store::{LocalTierConfig, StoreConfig};

    /// A small uncompressed 16-bit image as a Part-10 file (explicit VR little endian).
    fn image() -> Vec<u8> {
        fn el(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(vr);
            if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            }
            out.extend_from_slice(value);
        }
        let ts = b"1.2.840.10008.1.2.1\0";
        let mut meta = Vec::new();
        el(&mut meta, 0x0002, 0x0010, b"UI", ts);
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        el(&mut f, 0x0002, 0x0000, b"UL", &(meta.len() as u32).to_le_bytes());
        f.extend_from_slice(&meta);
        el(&mut f, 0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        el(&mut f, 0x0020, 0x000D, b"UI", b"1.2.3\0");
        el(&mut f, 0x0020, 0x000E, b"UI", b"1.2.3.1\0");
        el(&mut f, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
        el(&mut f, 0x0028, 0x0010, b"US", &64u16.to_le_bytes());
        el(&mut f, 0x0028, 0x0011, b"US", &64u16.to_le_bytes());
        el(&mut f, 0x0028, 0x0100, b"US", &16u16.to_le_bytes());
        el(&mut f, 0x0028, 0x0101, b"US", &12u16.to_le_bytes());
        el(&mut f, 0x0028, 0x0103, b"US", &0u16.to_le_bytes());
        let px: Vec<u8> =
            (0..64 * 64u32).flat_map(|i| ((i % 64) as u16 * 16 + (i / 64) as u16).to_le_bytes()).collect();
        el(&mut f, 0x7FE0, 0x0010, b"OW", &px);
        f
    }

    #[test]
    fn copy_recodes_verifies_and_leaves_the_source_until_freed() {
        let d = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            tiers: vec![LocalTierConfig::new("landing", "landing"), LocalTierConfig::new("warm", "warm")],
            sync: false,
            ..StoreConfig::new(d.path())
        };
        let store = BlobStore::open(config).unwrap();
        let file = image();
        let p = prepare_file_with(&file, INDEX_TAGS, Codec::Raw, 1).unwrap();
        assert_eq!(p.codec, Codec::Raw);
        store.put(&p.hash, 0, p.logical_len, &p.stored_vec()).unwrap();
        let missing = [7u8; 32];
        let out = copy_verified(&store, &[p.hash, missing], 0, 1, Codec::Hot, 1, &Reserve::NONE).unwrap();
        let c = out[0].as_ref().unwrap();
        assert_eq!(c.codec, Codec::Hot as u8);
        assert!(c.stored_len < p.logical_len, "hot codec compresses the gradient");
        assert!(matches!(out[1], Err(crate::Error::NotFound { .. })));
        assert_eq!(store.holders(&p.hash), vec![0, 1]);
        let back = store.tier_at(1).unwrap().get(&p.hash).unwrap();
        let logical = decode_verified(&p.hash, Codec::Hot, &back.bytes, back.logical_len).unwrap();
        assert_eq!(logical.len() as u64, p.logical_len);
        store.delete_in(0, &[p.hash]).unwrap();
        assert_eq!(store.holders(&p.hash), vec![1]);
    }

    #[test]
    fn a_damaged_source_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            tiers: vec![LocalTierConfig::new("a", "a"), LocalTierConfig::new("b", "b")],
            sync: false,
            ..StoreConfig::new(d.path())
        };
        let store = BlobStore::open(config).unwrap();
        // Stored under a hash its bytes do not have: decode_verified must refuse it.
        let file = image();
        let p = prepare_file_with(&file, INDEX_TAGS, Codec::Raw, 1).unwrap();
        let wrong = [1u8; 32];
        store.put(&wrong, 0, p.logical_len, &p.stored_vec()).unwrap();
        let out = copy_verified(&store, &[wrong], 0, 1, Codec::Hot, 1, &Reserve::NONE).unwrap();
        assert!(matches!(out[0], Err(crate::Error::HashMismatch { .. })));
        assert_eq!(store.holders(&wrong), vec![0], "the unverified copy was removed");
    }
}
