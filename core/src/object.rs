//! One incoming object, from received bytes to what the store keeps.
//!
//! The *canonical bytes* of an object are `<transfer syntax UID> 0x00 <dataset bytes as received>`.
//! They are what is hashed, compressed and stored: the same dataset dedupes to one blob whether it
//! came over DIMSE (no file meta) or from a Part-10 file. The bytes a file had before its dataset
//! (preamble, "DICM", group 0002) are returned as `prefix` for the index to keep, so an exported
//! file is byte-identical to the ingested one.

use crate::codec::{self, Codec, PixelLayout, StoredCrc};
use crate::error::{Error, Result};
use crate::hash::{self, Hash};
use crate::parse::{self, Parsed, PixelInfo};

/// Everything the engine needs from one object: index attributes, address, encoded payload.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub parsed: Parsed,
    pub hash: Hash,
    /// Bytes before the dataset in the input (empty for a bare dataset or a DIMSE dataset).
    pub prefix: Vec<u8>,
    pub logical_len: u64,
    pub codec: Codec,
    stored: Stored<'a>,
    /// CRC-32 of the stored bytes, where it came with the hash (raw objects; see
    /// [`hash::hash_and_crc`]), for the volume record to use instead of another pass.
    pub stored_crc: Option<u32>,
}

/// The stored bytes, without a copy where the codec is raw: a received buffer (past its
/// headroom), or the transfer syntax header + the caller's dataset bytes.
#[derive(Debug)]
enum Stored<'a> {
    Owned(Vec<u8>, usize),
    Split(Vec<u8>, &'a [u8]),
}

/// What remains of a [`Prepared`] object once its bytes are stored: everything but the bytes.
#[derive(Debug)]
pub struct Landed {
    pub parsed: Parsed,
    pub hash: Hash,
    pub prefix: Vec<u8>,
    pub logical_len: u64,
    pub codec: Codec,
    pub stored_len: u64,
}

impl Prepared<'_> {
    /// Drops the bytes (they may borrow the caller's input), keeps the rest.
    pub fn landed(self) -> Landed {
        let stored_len = self.stored_len() as u64;
        Landed {
            parsed: self.parsed,
            hash: self.hash,
            prefix: self.prefix,
            logical_len: self.logical_len,
            codec: self.codec,
            stored_len,
        }
    }

    /// The stored (encoded) bytes as (head, body): they are `head ++ body`.
    pub fn parts(&self) -> (&[u8], &[u8]) {
        match &self.stored {
            Stored::Owned(buf, at) => (&[], &buf[*at..]),
            Stored::Split(head, body) => (head, body),
        }
    }

    pub fn stored_len(&self) -> usize {
        let (h, b) = self.parts();
        h.len() + b.len()
    }

    /// The stored bytes in one buffer (a copy when they are split).
    pub fn stored_vec(&self) -> Vec<u8> {
        let (h, b) = self.parts();
        [h, b].concat()
    }
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
        ReceivedDataSet::with_capacity(0)
    }
}

impl ReceivedDataSet {
    /// Empty, with room for `expected` bytes of data set: the reader's guess (the previous data
    /// set of the association), so a CT slice is not copied again by every doubling of its
    /// buffer as it arrives.
    pub fn with_capacity(expected: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADROOM + expected);
        buf.resize(HEADROOM, 0);
        ReceivedDataSet { buf }
    }

    pub fn extend(&mut self, fragment: &[u8]) {
        self.buf.extend_from_slice(fragment);
    }

    /// Appends up to `n` bytes that `fill` writes into uninitialised room at the end, as a
    /// `recv` into the data set itself (no copy from a read buffer). `fill` returns how many
    /// bytes it wrote, or a negative value for none (an error it reports itself); the result
    /// is `fill`'s.
    ///
    /// # Safety
    /// `fill` must have initialised the first `r` bytes of the slice it is given when it
    /// returns `r > 0`, and `r` must be at most the slice's length.
    pub unsafe fn fill(
        &mut self,
        n: usize,
        fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> isize,
    ) -> isize {
        self.buf.reserve(n);
        let r = fill(&mut self.buf.spare_capacity_mut()[..n]);
        assert!(r <= n as isize, "fill reported {r} bytes written into {n}");
        if r > 0 {
            // SAFETY: the caller's contract: `r <= n` bytes initialised by `fill`.
            unsafe { self.buf.set_len(self.buf.len() + r as usize) };
        }
        r
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

/// Where the codec may apply its pixel filter: `base` is where the parsed dataset starts in the
/// buffer being encoded (the canonical header's length, or a file's `dataset_offset`).
pub fn pixel_layout(pixel: &PixelInfo, base: usize) -> Option<PixelLayout> {
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
        let Some(attr) = parsed.attrs.iter().find(|a| a.tag == tag && !trim_padding(&a.value).is_empty())
        else {
            return Err(Error::MissingAttribute { keyword, tag });
        };
        if let Some(why) = unsafe_uid(trim_padding(&attr.value)) {
            return Err(Error::Malformed {
                offset: 0,
                tag: Some(tag),
                reason: format!("{keyword} {:?} {why}", String::from_utf8_lossy(&attr.value)),
            });
        }
    }
    Ok(())
}

/// A value without its trailing NUL/space padding (PS3.5 6.2: UI pads with NUL, others with space).
fn trim_padding(value: &[u8]) -> &[u8] {
    &value[..value.iter().rposition(|&b| b != 0 && b != b' ').map_or(0, |i| i + 1)]
}

/// Why a UID cannot be kept, if it cannot. These UIDs name files (`export` writes
/// `<study>/<series>/<sop>.dcm`) and URL path segments, so a value that would climb out of a
/// directory or cut a path is refused whatever else it holds. Other departures from PS3.5's
/// digits-and-dots are kept: modalities in the field send them, and refusing their studies
/// would lose clinical data to protect nothing.
fn unsafe_uid(uid: &[u8]) -> Option<&'static str> {
    if uid.iter().any(|&b| b == b'/' || b == b'\\') {
        return Some("contains a path separator");
    }
    if uid.iter().any(|&b| b < 0x20 || b == 0x7F) {
        return Some("contains a control character");
    }
    if uid == b"." || uid == b".." {
        return Some("is not a UID");
    }
    None
}

fn prepare<'a>(
    parsed: Parsed,
    prefix: &[u8],
    dataset: &'a [u8],
    target: Codec,
    level: i32,
) -> Result<Prepared<'a>> {
    // Checked before anything is hashed or stored: a rejected object leaves nothing behind.
    check_required(&parsed)?;
    if target == Codec::Raw {
        // The canonical bytes are never assembled: hashed in two pieces, written by pwritev.
        let mut head = Vec::with_capacity(parsed.transfer_syntax.len() + 1);
        head.extend_from_slice(parsed.transfer_syntax.as_bytes());
        head.push(0);
        let (hash, crc) = hash::hash_and_crc(&[&head, dataset]);
        let logical_len = (head.len() + dataset.len()) as u64;
        return Ok(Prepared {
            parsed,
            hash,
            prefix: prefix.to_vec(),
            logical_len,
            codec: Codec::Raw,
            stored: Stored::Split(head, dataset),
            stored_crc: Some(crc),
        });
    }
    let logical = canonical(&parsed.transfer_syntax, dataset);
    prepare_canonical(parsed, prefix, logical, 0, target, level)
}

/// `buf[start..]` holds the canonical bytes; the buffer is kept as the stored bytes when the
/// target codec is raw.
fn prepare_canonical(
    parsed: Parsed,
    prefix: &[u8],
    buf: Vec<u8>,
    start: usize,
    target: Codec,
    level: i32,
) -> Result<Prepared<'static>> {
    let logical = &buf[start..];
    let logical_len = logical.len() as u64;
    let (hash, codec, stored, stored_crc) = if target == Codec::Raw {
        let (hash, crc) = hash::hash_and_crc(&[logical]);
        (hash, Codec::Raw, Stored::Owned(buf, start), Some(crc))
    } else {
        let hash = hash::hash(logical);
        let base = parsed.transfer_syntax.len() + 1;
        let layout = parsed.pixel.as_ref().and_then(|p| pixel_layout(p, base));
        let (codec, out) = encode_with(logical, layout.as_ref(), target, level)?;
        // The hot codec can keep an object raw: its crc then comes from the store's own pass.
        (hash, codec, Stored::Owned(out, 0), None)
    };
    Ok(Prepared { parsed, hash, prefix: prefix.to_vec(), logical_len, codec, stored, stored_crc })
}

/// Encodes for a tier's codec. Returns the codec actually used: [`Codec::Cold`] leaves what
/// its model does not code to the hot codec, which may keep it [`Codec::Raw`].
fn encode_with(
    logical: &[u8],
    layout: Option<&PixelLayout>,
    target: Codec,
    level: i32,
) -> Result<(Codec, Vec<u8>)> {
    match target {
        Codec::Raw => Ok((Codec::Raw, logical.to_vec())),
        Codec::Hot => codec::encode_hot(logical, layout, level),
        Codec::Cold => codec::encode_cold(logical, layout),
    }
}

/// Canonical bytes (as [`decode_verified`] returns them) encoded for `target`: what moving a
/// blob to a tier with another codec stores. The pixel layout is found by parsing the dataset
/// (without copying its pixels); canonical bytes that do not parse are compressed whole.
/// `level` is the hot codec's zstd level (the cold codec's fallback uses the default level).
pub fn encode_canonical(logical: &[u8], target: Codec, level: i32) -> Result<(Codec, Vec<u8>)> {
    encode_with(logical, canonical_layout(logical).as_ref(), target, level)
}

/// The cold codec's stream of canonical bytes in format `version` (2 to 6): tests that need
/// the streams older archives hold (format 6 is written today).
#[doc(hidden)]
pub fn encode_canonical_cold_version(logical: &[u8], version: u8) -> Result<Vec<u8>> {
    let layout = canonical_layout(logical)
        .ok_or_else(|| Error::Codec { reason: "no pixel layout in these canonical bytes".into() })?;
    codec::cold::encode_cold_version(logical, &layout, version)
}

/// The pixel layout of canonical bytes, found by parsing them; None if they do not parse.
fn canonical_layout(logical: &[u8]) -> Option<PixelLayout> {
    let (ts, dataset) = split_canonical(logical).ok()?;
    let parsed = parse::parse_dataset(dataset, ts, &[]).ok()?;
    parsed.pixel.as_ref().and_then(|p| pixel_layout(p, ts.len() + 1))
}

/// A file's bytes (Part-10, or a bare dataset) → prepared object.
pub fn prepare_file<'a>(bytes: &'a [u8], wanted: &[u32], level: i32) -> Result<Prepared<'a>> {
    prepare_file_with(bytes, wanted, Codec::Hot, level)
}

/// [`prepare_file`] with the codec of the tier the object goes to (see [`encode_canonical`]).
pub fn prepare_file_with<'a>(
    bytes: &'a [u8],
    wanted: &[u32],
    target: Codec,
    level: i32,
) -> Result<Prepared<'a>> {
    let parsed = parse::parse_file(bytes, wanted)?;
    let (prefix, dataset) = bytes.split_at(parsed.dataset_offset);
    prepare(parsed, prefix, dataset, target, level)
}

/// A dataset received with a known transfer syntax (DIMSE C-STORE, STOW-RS) → prepared object.
pub fn prepare_dataset<'a>(
    dataset: &'a [u8],
    transfer_syntax: &str,
    wanted: &[u32],
    target: Codec,
    level: i32,
) -> Result<Prepared<'a>> {
    let parsed = parse::parse_dataset(dataset, transfer_syntax, wanted)?;
    prepare(parsed, &[], dataset, target, level)
}

/// [`prepare_dataset`] of a data set received into a [`ReceivedDataSet`], without copying it.
pub fn prepare_received(
    received: ReceivedDataSet,
    transfer_syntax: &str,
    wanted: &[u32],
    target: Codec,
    level: i32,
) -> Result<Prepared<'static>> {
    let parsed = parse::parse_dataset(received.data_set(), transfer_syntax, wanted)?;
    check_required(&parsed)?;
    let (buf, start) = received.into_canonical(&parsed.transfer_syntax);
    prepare_canonical(parsed, &[], buf, start, target, level)
}

/// How a read checks what it decoded (DESIGN.md section 3.3; `[storage] verify_reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadCheck {
    /// The decoded bytes against a checksum stored with them where there is one (the hot
    /// codec's and the cold codec's XXH3-64 of the logical bytes; a raw payload is its logical bytes, which the blob
    /// store's record CRC has just checked), else their BLAKE3 against the blob's address.
    #[default]
    Checksum,
    /// BLAKE3 of the decoded bytes against the blob's address, on every read.
    Hash,
}

impl ReadCheck {
    pub fn parse(name: &str) -> Result<ReadCheck> {
        match name {
            "checksum" => Ok(ReadCheck::Checksum),
            "hash" => Ok(ReadCheck::Hash),
            _ => Err(Error::Codec {
                reason: format!("verify_reads is \"checksum\" or \"hash\", got {name:?}"),
            }),
        }
    }
}

/// Decodes the stored bytes of a blob into `logical` and checks the result as `check` says.
/// `stored` says whether the bytes were just read from the local blob store (its record CRC
/// checked them: the codec's CRC is skipped) or come from elsewhere (the codec checks its CRC).
/// Compaction, tier moves, replication and `verify` use [`decode_verified`]: BLAKE3 always.
pub fn decode_read_into(
    expected: &Hash,
    codec: Codec,
    stored: &[u8],
    logical_len: u64,
    logical: &mut Vec<u8>,
    check: ReadCheck,
    checked_by: StoredCrc,
) -> Result<()> {
    let len = usize::try_from(logical_len).map_err(|_| Error::Codec { reason: "object too large".into() })?;
    let checked = codec::decode_checked_into(codec, stored, len, logical, checked_by)?;
    if check == ReadCheck::Checksum && (checked || codec == Codec::Raw) {
        return Ok(());
    }
    let actual = hash::hash(logical);
    if &actual != expected {
        return Err(Error::HashMismatch { expected: hash::to_hex(expected), actual: hash::to_hex(&actual) });
    }
    Ok(())
}

/// Decodes stored bytes and checks they hash to `expected` (BLAKE3).
pub fn decode_verified(expected: &Hash, codec: Codec, stored: &[u8], logical_len: u64) -> Result<Vec<u8>> {
    let mut logical = Vec::new();
    decode_verified_into(expected, codec, stored, logical_len, &mut logical)?;
    Ok(logical)
}

/// [`decode_verified`] into a reused buffer (see [`codec::decode_into`]).
pub fn decode_verified_into(
    expected: &Hash,
    codec: Codec,
    stored: &[u8],
    logical_len: u64,
    logical: &mut Vec<u8>,
) -> Result<()> {
    decode_read_into(expected, codec, stored, logical_len, logical, ReadCheck::Hash, StoredCrc::Unchecked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_check_as_configured() {
        let mut logical = canonical("1.2.840.10008.1.2.1", &b"\x08\x00\x60\x00CS\x02\x00CT".repeat(400));
        let h = hash::hash(&logical);
        let (codec, hot) = codec::encode_hot(&logical, None, codec::DEFAULT_HOT_LEVEL).unwrap();
        assert_eq!(codec, Codec::Hot);
        let mut out = Vec::new();
        for check in [ReadCheck::Checksum, ReadCheck::Hash] {
            decode_read_into(
                &h,
                Codec::Hot,
                &hot,
                logical.len() as u64,
                &mut out,
                check,
                StoredCrc::Unchecked,
            )
            .unwrap();
            assert_eq!(out, logical);
            decode_read_into(
                &h,
                Codec::Raw,
                &logical,
                logical.len() as u64,
                &mut out,
                check,
                StoredCrc::Unchecked,
            )
            .unwrap();
        }
        // Stored under another address: only the BLAKE3 check can tell, and it runs where asked
        // and wherever the stored bytes carry no checksum of what they decode to.
        let other = hash::hash(b"other");
        let len = logical.len() as u64;
        assert!(decode_read_into(
            &other,
            Codec::Hot,
            &hot,
            len,
            &mut out,
            ReadCheck::Checksum,
            StoredCrc::Unchecked
        )
        .is_ok());
        assert!(decode_read_into(
            &other,
            Codec::Raw,
            &logical,
            len,
            &mut out,
            ReadCheck::Checksum,
            StoredCrc::Unchecked
        )
        .is_ok());
        for (codec, stored) in [(Codec::Hot, &hot), (Codec::Raw, &logical)] {
            let r =
                decode_read_into(&other, codec, stored, len, &mut out, ReadCheck::Hash, StoredCrc::Unchecked);
            assert!(matches!(r, Err(Error::HashMismatch { .. })), "{codec:?}: {r:?}");
        }
        assert!(decode_verified(&other, Codec::Hot, &hot, len).is_err());
        // The cold codec's versions 4 and later check their decode like the hot codec; its versions 1 to 3
        // store no checksum of the decoded bytes: BLAKE3 either way.
        logical = canonical("1.2.840.10008.1.2.1", &ct_dataset());
        let (codec, cold) = encode_canonical(&logical, Codec::Cold, 1).unwrap();
        assert_eq!(codec, Codec::Cold);
        let len = logical.len() as u64;
        let h = hash::hash(&logical);
        for check in [ReadCheck::Checksum, ReadCheck::Hash] {
            decode_read_into(&h, codec, &cold, len, &mut out, check, StoredCrc::Unchecked).unwrap();
            assert_eq!(out, logical);
        }
        assert!(decode_read_into(
            &other,
            codec,
            &cold,
            len,
            &mut out,
            ReadCheck::Checksum,
            StoredCrc::Unchecked
        )
        .is_ok());
        let r = decode_read_into(&other, codec, &cold, len, &mut out, ReadCheck::Hash, StoredCrc::Unchecked);
        assert!(matches!(r, Err(Error::HashMismatch { .. })), "{r:?}");
        let v3 = codec::cold::encode_cold_version(&logical, &canonical_layout(&logical).unwrap(), 3).unwrap();
        decode_read_into(&h, codec, &v3, len, &mut out, ReadCheck::Checksum, StoredCrc::Unchecked).unwrap();
        assert_eq!(out, logical);
        let r =
            decode_read_into(&other, codec, &v3, len, &mut out, ReadCheck::Checksum, StoredCrc::Unchecked);
        assert!(matches!(r, Err(Error::HashMismatch { .. })), "{r:?}");
        assert_eq!(ReadCheck::parse("hash").unwrap(), ReadCheck::Hash);
        assert_eq!(ReadCheck::parse("checksum").unwrap(), ReadCheck::default());
        assert!(ReadCheck::parse("none").is_err());
    }

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
    fn uids_that_would_name_a_path_outside_their_folder_are_refused() {
        let with_uids = |sop: &[u8], study: &[u8]| {
            [
                explicit_le(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"),
                explicit_le(0x0008_0018, b"UI", sop),
                explicit_le(0x0020_000D, b"UI", study),
                explicit_le(0x0020_000E, b"UI", b"1.2.3.6"),
            ]
            .concat()
        };
        let ts = "1.2.840.10008.1.2.1";
        let prep = |ds: &[u8]| prepare_dataset(ds, ts, crate::parse::INDEX_TAGS, Codec::Raw, 1).map(|_| ());
        // kept: conformant, padded, and the non-conformant values modalities really send
        for (sop, study) in
            [(&b"1.2.3.4"[..], &b"1.2.3.5\0"[..]), (b"1.2.03.4 ", b"1.2.3.5"), (b"1.2.abc", b"1.2")]
        {
            assert!(prep(&with_uids(sop, study)).is_ok(), "{sop:?} {study:?}");
        }
        for (sop, study, why) in [
            (&b"1.2.3.4"[..], &b"../../etc"[..], "path separator"),
            (b"x/y", b"1.2", "path separator"),
            (b"1.2\\3", b"1.2", "path separator"),
            (b"..", b"1.2", "not a UID"),
            (b"1.2", b"\0 ", "missing or empty"),
            (b"1.2\n", b"1.2", "control character"),
        ] {
            let err = prep(&with_uids(sop, study)).unwrap_err().to_string();
            assert!(err.contains(why), "{sop:?} {study:?}: {err}");
        }
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
        let a = prepare_dataset(&ds, ts, crate::parse::INDEX_TAGS, Codec::Hot, 1).unwrap();
        let b = prepare_received(received, ts, crate::parse::INDEX_TAGS, Codec::Hot, 1).unwrap();
        assert_eq!(
            (a.hash, a.logical_len, a.codec, a.stored_vec()),
            (b.hash, b.logical_len, b.codec, b.stored_vec())
        );
        assert_eq!(a.hash, crate::hash::hash(&canonical(ts, &ds)));
        assert!(matches!(a.codec, Codec::Hot), "the pixel filter ran: {:?}", a.codec);
        // Raw: the dataset is not copied (head + the caller's bytes), nor for a received buffer;
        // either way the same address and the canonical bytes as stored.
        let raw = prepare_dataset(&ds, ts, crate::parse::INDEX_TAGS, Codec::Raw, 1).unwrap();
        assert_eq!(raw.parts().1.as_ptr(), ds.as_ptr(), "the dataset is stored from the caller's buffer");
        let mut again = ReceivedDataSet::default();
        again.extend(&ds);
        let raw_rx = prepare_received(again, ts, crate::parse::INDEX_TAGS, Codec::Raw, 1).unwrap();
        for r in [&raw, &raw_rx] {
            assert_eq!((r.hash, r.logical_len, r.codec), (a.hash, a.logical_len, Codec::Raw));
            assert_eq!(r.stored_vec(), canonical(ts, &ds));
        }
        let mut missing = ReceivedDataSet::default();
        missing.extend(&ds[explicit_le(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0").len()..][..8]);
        assert!(prepare_received(missing, ts, crate::parse::INDEX_TAGS, Codec::Hot, 1).is_err());
    }

    /// A small CT-like dataset: noise on a smooth field, so the image model has work to do.
    fn ct_dataset() -> Vec<u8> {
        let mut rng = crate::testutil::Rng(3);
        let pixels: Vec<u8> = (0..96 * 80u32)
            .flat_map(|i| ((1000 + (i % 96) * 5 + (i / 96) * 3 + rng.below(9) as u32) as u16).to_le_bytes())
            .collect();
        [
            explicit_le(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            explicit_le(0x0008_0018, b"UI", b"1.2.3.4"),
            explicit_le(0x0020_000D, b"UI", b"1.2.3.5"),
            explicit_le(0x0020_000E, b"UI", b"1.2.3.6"),
            explicit_le(0x0028_0002, b"US", &1u16.to_le_bytes()),
            explicit_le(0x0028_0010, b"US", &80u16.to_le_bytes()),
            explicit_le(0x0028_0011, b"US", &96u16.to_le_bytes()),
            explicit_le(0x0028_0100, b"US", &16u16.to_le_bytes()),
            explicit_le(0x7FE0_0010, b"OW", &pixels),
        ]
        .concat()
    }

    #[test]
    fn objects_encode_for_every_tier_codec() {
        let ds = ct_dataset();
        let ts = "1.2.840.10008.1.2.1";
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        let meta_ts = [ts.as_bytes(), b"\0"].concat();
        let meta = explicit_le(0x0002_0010, b"UI", &meta_ts);
        file.extend(explicit_le(0x0002_0000, b"UL", &(meta.len() as u32).to_le_bytes()));
        file.extend(meta);
        file.extend_from_slice(&ds);

        let hot = prepare_file(&file, crate::parse::INDEX_TAGS, 1).unwrap();
        let cold = prepare_file_with(&file, crate::parse::INDEX_TAGS, Codec::Cold, 1).unwrap();
        assert_eq!((hot.codec, cold.codec), (Codec::Hot, Codec::Cold));
        assert_eq!((hot.hash, hot.logical_len), (cold.hash, cold.logical_len));
        assert!(cold.stored_len() < hot.stored_len(), "{} vs {}", cold.stored_len(), hot.stored_len());
        let logical = decode_verified(&cold.hash, cold.codec, &cold.stored_vec(), cold.logical_len).unwrap();
        assert_eq!(logical, canonical(ts, &ds));

        // Moving the blob between tiers: canonical bytes to each codec and back.
        for target in [Codec::Raw, Codec::Hot, Codec::Cold] {
            let (codec, stored) = encode_canonical(&logical, target, 1).unwrap();
            assert_eq!(codec, target);
            assert_eq!(decode_verified(&cold.hash, codec, &stored, cold.logical_len).unwrap(), logical);
        }
        assert_eq!(encode_canonical(&logical, Codec::Cold, 1).unwrap().1, cold.stored_vec());
        // Bytes that do not parse are still kept (the cold codec falls back to hot).
        let junk = canonical(ts, &[7u8; 5000]);
        let (codec, stored) = encode_canonical(&junk, Codec::Cold, 1).unwrap();
        assert_ne!(codec, Codec::Cold);
        assert_eq!(crate::codec::decode(codec, &stored, junk.len()).unwrap(), junk);
    }
}
