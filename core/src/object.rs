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

/// Room kept in front of a received data set for its canonical header: the longest UID (64)
/// and the NUL.
pub const HEADROOM: usize = 65;

/// A data set being received (DIMSE P-DATA), gathered behind [`HEADROOM`] bytes so its canonical
/// bytes are made in place rather than by copying the whole data set again (~0.5 MB per CT
/// slice, on every C-STORE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedDataSet {
    buf: Vec<u8>,
}

impl Default for ReceivedDataSet {
    fn default() -> Self {
        ReceivedDataSet { buf: vec![0; HEADROOM] }
    }
}

impl ReceivedDataSet {
    pub fn extend(&mut self, fragment: &[u8]) {
        self.buf.extend_from_slice(fragment);
    }

    /// The data set bytes as received.
    pub fn data_set(&self) -> &[u8] {
        &self.buf[HEADROOM..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - HEADROOM
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (buffer, start): `buffer[start..]` is [`canonical`]`(transfer_syntax, data set)`.
    fn into_canonical(self, transfer_syntax: &str) -> (Vec<u8>, usize) {
        let ts = transfer_syntax.as_bytes();
        if ts.len() + 1 > HEADROOM {
            // not a UID; parsing refuses it anyway, this keeps the bytes right regardless
            return (canonical(transfer_syntax, self.data_set()), 0);
        }
        let mut buf = self.buf;
        let start = HEADROOM - ts.len() - 1;
        buf[start..HEADROOM - 1].copy_from_slice(ts);
        buf[HEADROOM - 1] = 0;
        (buf, start)
    }
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
    prepare_canonical(parsed, prefix, &logical, level)
}

fn prepare_canonical(parsed: Parsed, prefix: &[u8], logical: &[u8], level: i32) -> Result<Prepared> {
    let hash = hash::hash(logical);
    let base = parsed.transfer_syntax.len() + 1;
    let layout = parsed.pixel.as_ref().and_then(|p| pixel_layout(p, base));
    let (codec, stored) = codec::encode_hot(logical, layout.as_ref(), level)?;
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

/// [`prepare_dataset`] of a data set received into a [`ReceivedDataSet`], without copying it.
pub fn prepare_received(
    received: ReceivedDataSet,
    transfer_syntax: &str,
    wanted: &[u32],
    level: i32,
) -> Result<Prepared> {
    let parsed = parse::parse_dataset(received.data_set(), transfer_syntax, wanted)?;
    check_required(&parsed)?;
    let (buf, start) = received.into_canonical(&parsed.transfer_syntax);
    prepare_canonical(parsed, &[], &buf[start..], level)
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

    #[test]
    fn received_data_set_becomes_canonical_in_place() {
        let mut r = ReceivedDataSet::default();
        assert!(r.is_empty());
        r.extend(b"\x08\x00");
        r.extend(b"\x05\x00");
        assert_eq!((r.len(), r.data_set()), (4, &b"\x08\x00\x05\x00"[..]));
        let other = r.clone();
        let ptr = r.data_set().as_ptr();
        let ts = "1.2.840.10008.1.2.1";
        let (buf, start) = r.into_canonical(ts);
        assert_eq!(&buf[start..], canonical(ts, b"\x08\x00\x05\x00").as_slice());
        assert_eq!(buf[HEADROOM..].as_ptr(), ptr, "not copied");
        let long = "1.".repeat(40);
        let (buf, start) = other.into_canonical(&long);
        assert_eq!(&buf[start..], canonical(&long, b"\x08\x00\x05\x00").as_slice());
    }

    fn explicit_le(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OW" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn prepare_received_equals_prepare_dataset() {
        let pixels: Vec<u8> = (0..64 * 64u32).flat_map(|i| ((i * 7 % 4096) as u16).to_le_bytes()).collect();
        let ds = [
            explicit_le(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            explicit_le(0x0008_0018, b"UI", b"1.2.3.4"),
            explicit_le(0x0020_000D, b"UI", b"1.2.3.5"),
            explicit_le(0x0020_000E, b"UI", b"1.2.3.6"),
            explicit_le(0x0028_0002, b"US", &1u16.to_le_bytes()),
            explicit_le(0x0028_0010, b"US", &64u16.to_le_bytes()),
            explicit_le(0x0028_0011, b"US", &64u16.to_le_bytes()),
            explicit_le(0x0028_0100, b"US", &16u16.to_le_bytes()),
            explicit_le(0x7FE0_0010, b"OW", &pixels),
        ]
        .concat();
        let ts = "1.2.840.10008.1.2.1";
        let mut received = ReceivedDataSet::default();
        for chunk in ds.chunks(1000) {
            received.extend(chunk);
        }
        let a = prepare_dataset(&ds, ts, crate::parse::INDEX_TAGS, 1).unwrap();
        let b = prepare_received(received, ts, crate::parse::INDEX_TAGS, 1).unwrap();
        assert_eq!((a.hash, a.logical_len, a.codec, &a.stored), (b.hash, b.logical_len, b.codec, &b.stored));
        assert_eq!(a.hash, crate::hash::hash(&canonical(ts, &ds)));
        assert!(matches!(a.codec, Codec::Hot), "the pixel filter ran: {:?}", a.codec);
        let mut missing = ReceivedDataSet::default();
        missing.extend(&ds[explicit_le(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0").len()..][..8]);
        assert!(prepare_received(missing, ts, crate::parse::INDEX_TAGS, 1).is_err());
    }
}
