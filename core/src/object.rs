//! One incoming object, from received bytes to what the store keeps.
//!
//! The *canonical bytes* of an object are `<transfer syntax UID> 0x00 <dataset bytes as received>`.
//! They are what is hashed, compressed and stored: the same dataset dedupes to one blob whether it
//! came over DIMSE (no file meta) or from a Part-10 file. The bytes a file had before its dataset
//! (preamble, "DICM", group 0002) are returned as `prefix` for the index to keep, so an exported
//! file is byte-identical to the ingested one.

use crate::codec::{self, Codec, PixelLayout};
use crate::error::{Error, Result};
use crate::hash::{self, Hash};
use crate::parse::{self, Parsed, PixelInfo};

/// Everything the engine needs from one object: index attributes, address, encoded payload.
#[derive(Debug)]
pub struct Prepared {
    pub parsed: Parsed,
    pub hash: Hash,
    /// Bytes before the dataset in the input (empty for a bare dataset or a DIMSE dataset).
    pub prefix: Vec<u8>,
    pub logical_len: u64,
    pub codec: Codec,
    pub stored: Vec<u8>,
}

/// Builds the canonical bytes of a dataset.
pub fn canonical(transfer_syntax: &str, dataset: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(transfer_syntax.len() + 1 + dataset.len());
    out.extend_from_slice(transfer_syntax.as_bytes());
    out.push(0);
    out.extend_from_slice(dataset);
    out
}

/// Splits canonical bytes into (transfer syntax UID, dataset bytes).
pub fn split_canonical(logical: &[u8]) -> Result<(&str, &[u8])> {
    let nul =
        logical.iter().take(65).position(|&b| b == 0).ok_or_else(|| Error::Codec {
            reason: "canonical object has no transfer syntax header".into(),
        })?;
    let ts = std::str::from_utf8(&logical[..nul])
        .map_err(|_| Error::Codec { reason: "transfer syntax UID is not ASCII".into() })?;
    Ok((ts, &logical[nul + 1..]))
}

/// Where the codec may apply its pixel filter, in canonical-byte coordinates.
fn pixel_layout(pixel: &PixelInfo, base: usize) -> Option<PixelLayout> {
    if pixel.encapsulated {
        return Some(PixelLayout::verbatim(base + pixel.offset, pixel.length));
    }
    let bytes_per_sample = match pixel.bits_allocated {
        8 => 1,
        16 => 2,
        32 => 4,
        _ => return None,
    };
    Some(PixelLayout::native(
        base + pixel.offset,
        pixel.length,
        bytes_per_sample,
        pixel.big_endian,
        u32::from(pixel.columns),
        pixel.samples_per_pixel.max(1),
        pixel.planar_configuration == 1,
    ))
}

/// The attributes without which an object cannot be filed in the patient/study/series hierarchy.
const REQUIRED: [(u32, &str); 3] =
    [(0x0020_000D, "StudyInstanceUID"), (0x0020_000E, "SeriesInstanceUID"), (0x0008_0018, "SOPInstanceUID")];

fn check_required(parsed: &Parsed) -> Result<()> {
    for (tag, keyword) in REQUIRED {
        if !parsed.attrs.iter().any(|a| a.tag == tag && !a.value.is_empty()) {
            return Err(Error::MissingAttribute { keyword, tag });
        }
    }
    Ok(())
}

fn prepare(parsed: Parsed, prefix: &[u8], dataset: &[u8], level: i32) -> Result<Prepared> {
    // Checked before anything is hashed or stored: a rejected object leaves nothing behind.
    check_required(&parsed)?;
    let logical = canonical(&parsed.transfer_syntax, dataset);
    let hash = hash::hash(&logical);
    let base = parsed.transfer_syntax.len() + 1;
    let layout = parsed.pixel.as_ref().and_then(|p| pixel_layout(p, base));
    let (codec, stored) = codec::encode_hot(&logical, layout.as_ref(), level)?;
    Ok(Prepared { parsed, hash, prefix: prefix.to_vec(), logical_len: logical.len() as u64, codec, stored })
}

/// A file's bytes (Part-10, or a bare dataset) → prepared object.
pub fn prepare_file(bytes: &[u8], wanted: &[u32], level: i32) -> Result<Prepared> {
    let parsed = parse::parse_file(bytes, wanted)?;
    let (prefix, dataset) = bytes.split_at(parsed.dataset_offset);
    prepare(parsed, prefix, dataset, level)
}

/// A dataset received with a known transfer syntax (DIMSE C-STORE, STOW-RS) → prepared object.
pub fn prepare_dataset(
    dataset: &[u8],
    transfer_syntax: &str,
    wanted: &[u32],
    level: i32,
) -> Result<Prepared> {
    let parsed = parse::parse_dataset(dataset, transfer_syntax, wanted)?;
    prepare(parsed, &[], dataset, level)
}

/// Decodes stored bytes and checks they hash to `expected`: every read path verifies.
pub fn decode_verified(expected: &Hash, codec: Codec, stored: &[u8], logical_len: u64) -> Result<Vec<u8>> {
    let logical = codec::decode(codec, stored, logical_len as usize)?;
    let actual = hash::hash(&logical);
    if &actual != expected {
        return Err(Error::HashMismatch { expected: hash::to_hex(expected), actual: hash::to_hex(&actual) });
    }
    Ok(logical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip() {
        let c = canonical("1.2.840.10008.1.2.1", b"\x08\x00\x05\x00");
        let (ts, ds) = split_canonical(&c).unwrap();
        assert_eq!(ts, "1.2.840.10008.1.2.1");
        assert_eq!(ds, b"\x08\x00\x05\x00");
        assert!(split_canonical(b"no nul here").is_err());
    }
}
