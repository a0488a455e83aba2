//! DICOM Part-10 / dataset reader.
//!
//! Walks every top-level element of a dataset in any transfer syntax's framing, descending into
//! undefined-length sequences and encapsulated pixel data only to find their ends, and returns the
//! index attributes and the pixel data location without copying pixel bytes.
//!
//! Robustness rules (the input is untrusted):
//! - every length is checked against the bytes that remain before it is used, so a bogus length is
//!   an `Error::Malformed`, never a panic or an allocation;
//! - nesting of undefined-length sequences/items is limited to [`MAX_DEPTH`];
//! - nothing is allocated per element except the values of the extracted attributes (which are
//!   slices of the input, so bounded by its size); a deflated dataset is inflated up to
//!   [`MAX_INFLATED`] bytes.
//!
//! Leniency (what real writers get wrong and pydicom accepts): a meta group whose group length is
//! missing or wrong (its end is where group 0002 ends), no preamble, no meta, no transfer syntax
//! in the meta, explicit-VR elements that switch to implicit VR (VR bytes that are not two
//! upper-case letters), unknown VRs (2-byte length), odd lengths, UN with undefined length, and
//! trailing zero bytes after the dataset.

use crate::error::{Error, Result};

pub const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
pub const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
/// JPIP Referenced Deflate: the dataset is deflated like [`TS_DEFLATED_LE`].
const TS_JPIP_REFERENCED_DEFLATE: &str = "1.2.840.10008.1.2.4.95";

/// (7FE0,0010) Pixel Data
pub const TAG_PIXEL_DATA: u32 = 0x7FE0_0010;

/// Deepest nesting of undefined-length sequences/items accepted before the input is rejected.
pub const MAX_DEPTH: usize = 64;
/// Largest inflated size of a deflated dataset.
pub const MAX_INFLATED: u64 = 1 << 30;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_DELIMITER: u32 = 0xFFFE_E00D;
const SEQUENCE_DELIMITER: u32 = 0xFFFE_E0DD;

const TAG_TRANSFER_SYNTAX: u32 = 0x0002_0010;
const TAG_META_GROUP_LENGTH: u32 = 0x0002_0000;
const TAG_SAMPLES_PER_PIXEL: u32 = 0x0028_0002;
const TAG_PLANAR_CONFIGURATION: u32 = 0x0028_0006;
const TAG_NUMBER_OF_FRAMES: u32 = 0x0028_0008;
const TAG_ROWS: u32 = 0x0028_0010;
const TAG_COLUMNS: u32 = 0x0028_0011;
const TAG_BITS_ALLOCATED: u32 = 0x0028_0100;
const TAG_PIXEL_REPRESENTATION: u32 = 0x0028_0103;

/// One extracted attribute. `value` holds the raw value bytes: for string VRs with the trailing
/// padding (space, NUL) removed; for binary VRs (US, SS, UL, SL, FL, FD, AT, ...) converted to
/// little endian so callers never care about the source byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub tag: u32,
    pub vr: [u8; 2],
    pub value: Vec<u8>,
}

/// Where the pixel data sits and how its samples are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelInfo {
    /// Offset of the Pixel Data *value* (after its tag/VR/length header) from the start of the
    /// dataset bytes (not of the file).
    pub offset: usize,
    /// Length of the value in bytes. For encapsulated data: the bytes from `offset` up to and
    /// including the sequence delimitation item.
    pub length: usize,
    pub encapsulated: bool,
    pub rows: u16,
    pub columns: u16,
    pub bits_allocated: u16,
    pub samples_per_pixel: u16,
    /// 0 = unsigned, 1 = two's complement
    pub pixel_representation: u16,
    /// 0 = interleaved (R1G1B1R2...), 1 = planar
    pub planar_configuration: u16,
    pub number_of_frames: u32,
    /// True when the dataset is Explicit VR Big Endian (pixel samples are big endian).
    pub big_endian: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes of the input before the dataset: 128-byte preamble + "DICM" + file meta group (0002).
    /// 0 for a bare dataset (no preamble, no meta).
    pub dataset_offset: usize,
    /// From (0002,0010) when there is file meta; otherwise inferred from the first element.
    pub transfer_syntax: String,
    /// True when there was no file meta and the transfer syntax was guessed.
    pub ts_inferred: bool,
    /// File meta elements (group 0002), values as in `Attr`.
    pub meta: Vec<Attr>,
    /// Top-level dataset elements whose tag is in `wanted`, in file order.
    pub attrs: Vec<Attr>,
    /// None when there is no top-level (7FE0,0010) or the dataset is deflated.
    pub pixel: Option<PixelInfo>,
}

/// The attributes the index keeps (sorted, for binary search): patient, study, series and
/// instance level, at least those QIDO-RS requires of an origin server.
pub const INDEX_TAGS: &[u32] = &[
    0x0008_0005, // SpecificCharacterSet
    0x0008_0008, // ImageType
    0x0008_0012, // InstanceCreationDate
    0x0008_0013, // InstanceCreationTime
    0x0008_0016, // SOPClassUID
    0x0008_0018, // SOPInstanceUID
    0x0008_0020, // StudyDate
    0x0008_0021, // SeriesDate
    0x0008_0022, // AcquisitionDate
    0x0008_0023, // ContentDate
    0x0008_0030, // StudyTime
    0x0008_0031, // SeriesTime
    0x0008_0032, // AcquisitionTime
    0x0008_0033, // ContentTime
    0x0008_0050, // AccessionNumber
    0x0008_0060, // Modality
    0x0008_0070, // Manufacturer
    0x0008_0080, // InstitutionName
    0x0008_0090, // ReferringPhysicianName
    0x0008_1010, // StationName
    0x0008_1030, // StudyDescription
    0x0008_103E, // SeriesDescription
    0x0008_1090, // ManufacturerModelName
    0x0010_0010, // PatientName
    0x0010_0020, // PatientID
    0x0010_0021, // IssuerOfPatientID
    0x0010_0030, // PatientBirthDate
    0x0010_0040, // PatientSex
    0x0010_1010, // PatientAge
    0x0018_0015, // BodyPartExamined
    0x0020_000D, // StudyInstanceUID
    0x0020_000E, // SeriesInstanceUID
    0x0020_0010, // StudyID
    0x0020_0011, // SeriesNumber
    0x0020_0013, // InstanceNumber
    0x0028_0002, // SamplesPerPixel
    0x0028_0004, // PhotometricInterpretation
    0x0028_0008, // NumberOfFrames
    0x0028_0010, // Rows
    0x0028_0011, // Columns
    0x0028_0100, // BitsAllocated
    0x0028_0101, // BitsStored
    0x0028_0103, // PixelRepresentation
    0x0040_0244, // PerformedProcedureStepStartDate
    0x0040_0245, // PerformedProcedureStepStartTime
];

/// Parses a Part-10 file (preamble + DICM + meta + dataset) or a bare dataset (no preamble).
pub fn parse_file(bytes: &[u8], wanted: &[u32]) -> Result<Parsed> {
    let meta_start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(132)
    } else if starts_with_meta(bytes) {
        Some(0)
    } else if bytes.len() >= 4 && &bytes[..4] == b"DICM" && starts_with_meta(&bytes[4..]) {
        Some(4)
    } else {
        None
    };

    let Some(meta_start) = meta_start else {
        // A bare dataset: the transfer syntax comes from its first element.
        let (enc, ts) = infer_syntax(bytes).ok_or_else(|| Error::NotDicom {
            reason: "no DICM prefix, no file meta and no plausible first data element".into(),
        })?;
        let mut parsed = walk_dataset(bytes, 0, enc, wanted)?;
        parsed.transfer_syntax = ts.to_string();
        parsed.ts_inferred = true;
        return Ok(parsed);
    };

    let (meta, dataset_offset, ts) = read_meta(bytes, meta_start)?;
    let dataset = &bytes[dataset_offset..];
    let (ts, inferred) = match ts {
        Some(ts) => (ts, false),
        None => {
            let ts = infer_syntax(dataset).map_or(TS_IMPLICIT_LE, |(_, ts)| ts);
            (ts.to_string(), true)
        }
    };
    let mut parsed = parse_with_syntax(dataset, dataset_offset, &ts, wanted)?;
    parsed.dataset_offset = dataset_offset;
    parsed.transfer_syntax = ts;
    parsed.ts_inferred = inferred;
    parsed.meta = meta;
    Ok(parsed)
}

/// Parses a dataset whose transfer syntax is known (as received over DIMSE).
pub fn parse_dataset(bytes: &[u8], transfer_syntax: &str, wanted: &[u32]) -> Result<Parsed> {
    let ts = transfer_syntax.trim_end_matches(['\0', ' ']);
    let mut parsed = parse_with_syntax(bytes, 0, ts, wanted)?;
    parsed.transfer_syntax = ts.to_string();
    Ok(parsed)
}

/// How a dataset's elements are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Enc {
    explicit: bool,
    big: bool,
}

const IMPLICIT_LE: Enc = Enc { explicit: false, big: false };
const EXPLICIT_LE: Enc = Enc { explicit: true, big: false };
const EXPLICIT_BE: Enc = Enc { explicit: true, big: true };

/// Framing of a transfer syntax: (encoding, deflated). Every UID other than the three
/// uncompressed ones and the deflated ones (all the compressed syntaxes, and unknown UIDs)
/// is explicit VR little endian with encapsulated pixel data.
fn framing(ts: &str) -> (Enc, bool) {
    match ts {
        TS_IMPLICIT_LE => (IMPLICIT_LE, false),
        TS_EXPLICIT_BE => (EXPLICIT_BE, false),
        TS_DEFLATED_LE | TS_JPIP_REFERENCED_DEFLATE => (EXPLICIT_LE, true),
        _ => (EXPLICIT_LE, false),
    }
}

/// `dataset` starts at `base` in the caller's input (for error offsets).
fn parse_with_syntax(dataset: &[u8], base: usize, ts: &str, wanted: &[u32]) -> Result<Parsed> {
    let (enc, deflated) = framing(ts);
    if !deflated {
        return walk_dataset(dataset, base, enc, wanted);
    }
    let inflated = inflate(dataset, base)?;
    let mut parsed = walk_dataset(&inflated, 0, enc, wanted).map_err(|e| match e {
        Error::Malformed { offset, tag, reason } => {
            Error::malformed(base, tag, format!("in the inflated dataset at offset {offset}: {reason}"))
        }
        other => other,
    })?;
    parsed.pixel = None;
    Ok(parsed)
}

/// Inflates a deflated dataset (raw deflate; a zlib-wrapped stream is accepted too). The stream
/// must end properly: a truncated one is `Malformed`, not a silently shorter dataset.
fn inflate(data: &[u8], base: usize) -> Result<Vec<u8>> {
    match inflate_with(data, false, base) {
        Err(Error::Malformed { .. }) if data.first() == Some(&0x78) => inflate_with(data, true, base)
            .map_err(|_| Error::malformed(base, None, "bad deflate stream (neither raw deflate nor zlib)")),
        other => other,
    }
}

fn inflate_with(data: &[u8], zlib: bool, base: usize) -> Result<Vec<u8>> {
    let max = MAX_INFLATED as usize;
    let mut d = flate2::Decompress::new(zlib);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).clamp(4096, 64 << 20));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= max {
                return Err(Error::Unsupported {
                    reason: format!("deflated dataset inflates to more than {max} bytes"),
                });
            }
            out.reserve(out.len().clamp(4096, max - out.len()));
        }
        let consumed = d.total_in() as usize;
        let produced = out.len();
        let status = d
            .decompress_vec(&data[consumed..], &mut out, flate2::FlushDecompress::None)
            .map_err(|e| Error::malformed(base + consumed, None, format!("bad deflate stream: {e}")))?;
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        if d.total_in() as usize == consumed && out.len() == produced {
            // No progress with room in the output: the input is used up.
            return Err(Error::malformed(base + data.len(), None, "deflate stream truncated"));
        }
    }
}

/// True when `b` plausibly starts with a group 0002 element (a meta group without preamble).
fn starts_with_meta(b: &[u8]) -> bool {
    b.len() >= 8 && b[0] == 2 && b[1] == 0 && b[3] <= 1
}

/// Reads the file meta group starting at `start`: its elements, where the dataset starts, and the
/// transfer syntax. The group ends where the tags stop being group 0002, whatever (0002,0000)
/// says (it is often missing or wrong), except for a deflated dataset, whose first bytes are not
/// a tag: there a group length that lands on an element boundary is trusted.
fn read_meta(bytes: &[u8], start: usize) -> Result<(Vec<Attr>, usize, Option<String>)> {
    let cur = Cursor { buf: bytes, base: 0 };
    let mut meta = Vec::new();
    let mut ts: Option<String> = None;
    let mut group_end: Option<usize> = None;
    let mut pos = start;
    while pos + 2 <= bytes.len() {
        if group_end == Some(pos) && ts.as_deref().is_some_and(|t| framing(t).1) {
            break;
        }
        if u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) != 0x0002 {
            break;
        }
        let h = cur.header(pos, EXPLICIT_LE)?;
        if h.len == UNDEFINED {
            pos = cur.skip_sequence(h.value, h.tag, h.inner(EXPLICIT_LE), 1)?;
            continue;
        }
        let end = cur.value_end(&h)?;
        let value = &bytes[h.value..end];
        if h.tag == TAG_META_GROUP_LENGTH && value.len() == 4 {
            let len = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
            group_end = end.checked_add(len as usize);
        }
        let attr = make_attr(&h, value, EXPLICIT_LE);
        if h.tag == TAG_TRANSFER_SYNTAX {
            let uid = String::from_utf8_lossy(&attr.value).trim().to_string();
            if !uid.is_empty() {
                ts = Some(uid);
            }
        }
        meta.push(attr);
        pos = end;
    }
    Ok((meta, pos, ts))
}

/// Guesses the framing of a dataset from its first element. None when the bytes do not look like
/// a dataset at all.
fn infer_syntax(b: &[u8]) -> Option<(Enc, &'static str)> {
    if b.len() < 8 {
        return None;
    }
    let group_le = u16::from_le_bytes([b[0], b[1]]);
    let group_be = u16::from_be_bytes([b[0], b[1]]);
    // Any text (two printable bytes) gives a group >= 0x2000 in either byte order; a real
    // dataset starts with a low group (0008 almost always).
    const MAX_FIRST_GROUP: u16 = 0x2000;
    if is_known_vr([b[4], b[5]]) {
        let (enc, ts, group) = if group_le <= group_be {
            (EXPLICIT_LE, TS_EXPLICIT_LE, group_le)
        } else {
            (EXPLICIT_BE, TS_EXPLICIT_BE, group_be)
        };
        return (group < MAX_FIRST_GROUP).then_some((enc, ts));
    }
    if group_le >= MAX_FIRST_GROUP {
        return None;
    }
    let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (len == UNDEFINED || len as usize <= b.len() - 8).then_some((IMPLICIT_LE, TS_IMPLICIT_LE))
}

/// The encoding the dataset really uses, judged from its first element as pydicom does: some
/// writers declare explicit VR and write implicit VR (or the reverse). The transfer syntax is
/// kept as declared (the bytes are stored as they are); only the reading adapts.
fn actual_encoding(buf: &[u8], enc: Enc) -> Enc {
    if buf.len() < 8 || (buf[0] == 0xFE && buf[1] == 0xFF) || (buf[0] == 0xFF && buf[1] == 0xFE) {
        return enc;
    }
    let vr = [buf[4], buf[5]];
    if enc.explicit && !(vr[0].is_ascii_uppercase() && vr[1].is_ascii_uppercase()) {
        Enc { explicit: false, ..enc }
    } else if !enc.explicit && is_known_vr(vr) {
        Enc { explicit: true, ..enc }
    } else {
        enc
    }
}

/// Pixel module values seen at the top level.
#[derive(Default)]
struct PixelModule {
    rows: u16,
    columns: u16,
    bits_allocated: u16,
    samples_per_pixel: Option<u16>,
    pixel_representation: u16,
    planar_configuration: u16,
    number_of_frames: Option<u32>,
    /// (offset, length, encapsulated)
    data: Option<(usize, usize, bool)>,
}

/// Walks the top level of a dataset. `base` is where `buf` starts in the caller's input.
fn walk_dataset(buf: &[u8], base: usize, enc: Enc, wanted: &[u32]) -> Result<Parsed> {
    let enc = actual_encoding(buf, enc);
    let cur = Cursor { buf, base };
    let mut attrs = Vec::new();
    let mut px = PixelModule::default();
    let last_wanted = wanted.last().copied().unwrap_or(0);
    let mut pos = 0;
    // Where the zero-byte scan below last found a non-zero byte (keeps the scan linear).
    let mut nonzero_at = 0;
    while pos < buf.len() {
        // Trailing zero bytes some writers leave at the end: accept them. A dataset has no group
        // 0000, so two zero bytes cannot start an element (one could: the group 00xx of a big
        // endian tag, or xx00 of a little endian one).
        if pos >= nonzero_at && buf[pos] == 0 {
            match buf[pos..].iter().position(|&b| b != 0) {
                Some(i) => nonzero_at = pos + i,
                None if buf.len() - pos >= 2 => break,
                None => {}
            }
        }
        let h = cur.header(pos, enc)?;
        if h.tag >> 16 == 0xFFFE {
            return Err(cur.err(pos, Some(h.tag), "item or delimiter outside a sequence"));
        }
        if h.len == UNDEFINED {
            let end = cur.skip_sequence(h.value, h.tag, h.inner(enc), 1)?;
            if h.tag == TAG_PIXEL_DATA {
                px.data = Some((h.value, end - h.value, true));
            }
            if h.tag <= last_wanted && wanted.binary_search(&h.tag).is_ok() {
                attrs.push(Attr { tag: h.tag, vr: h.vr, value: buf[h.value..end].to_vec() });
            }
            pos = end;
            continue;
        }
        let end = cur.value_end(&h)?;
        let value = &buf[h.value..end];
        match h.tag {
            TAG_PIXEL_DATA => px.data = Some((h.value, value.len(), false)),
            TAG_ROWS => px.rows = read_u16(&h, value, enc).unwrap_or(0),
            TAG_COLUMNS => px.columns = read_u16(&h, value, enc).unwrap_or(0),
            TAG_BITS_ALLOCATED => px.bits_allocated = read_u16(&h, value, enc).unwrap_or(0),
            TAG_SAMPLES_PER_PIXEL => px.samples_per_pixel = read_u16(&h, value, enc),
            TAG_PIXEL_REPRESENTATION => px.pixel_representation = read_u16(&h, value, enc).unwrap_or(0),
            TAG_PLANAR_CONFIGURATION => px.planar_configuration = read_u16(&h, value, enc).unwrap_or(0),
            TAG_NUMBER_OF_FRAMES => px.number_of_frames = read_uint(&h, value, enc),
            _ => {}
        }
        if h.tag <= last_wanted && wanted.binary_search(&h.tag).is_ok() {
            attrs.push(make_attr(&h, value, enc));
        }
        pos = end;
    }
    let pixel = px.data.map(|(offset, length, encapsulated)| PixelInfo {
        offset,
        length,
        encapsulated,
        rows: px.rows,
        columns: px.columns,
        bits_allocated: px.bits_allocated,
        samples_per_pixel: px.samples_per_pixel.unwrap_or(1),
        pixel_representation: px.pixel_representation,
        planar_configuration: px.planar_configuration,
        number_of_frames: px.number_of_frames.unwrap_or(1),
        big_endian: enc.big,
    });
    Ok(Parsed {
        dataset_offset: 0,
        transfer_syntax: String::new(),
        ts_inferred: false,
        meta: Vec::new(),
        attrs,
        pixel,
    })
}

/// One element header.
#[derive(Debug)]
struct Header {
    tag: u32,
    /// The VR in the file for explicit VR, else from the built-in dictionary ("UN" if unknown).
    vr: [u8; 2],
    /// The VR was read from the file (not looked up).
    explicit_vr: bool,
    len: u32,
    /// Position of the value.
    value: usize,
}

impl Header {
    /// Encoding of the contents of this undefined-length element. UN with undefined length holds
    /// an implicit VR little endian sequence; in an explicit VR little endian dataset keep the
    /// explicit reader, whose fallback for non-letter VR bytes also reads implicit elements
    /// (some writers keep explicit VR inside such sequences, pydicom accepts both).
    fn inner(&self, enc: Enc) -> Enc {
        if self.explicit_vr && self.vr == *b"UN" && enc.big {
            IMPLICIT_LE
        } else {
            enc
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    /// Offset of `buf[0]` in the caller's input, for error offsets.
    base: usize,
}

impl Cursor<'_> {
    fn err(&self, pos: usize, tag: Option<u32>, reason: impl Into<String>) -> Error {
        Error::malformed(self.base + pos, tag, reason)
    }

    /// Reads the element header at `pos`.
    #[inline]
    fn header(&self, pos: usize, enc: Enc) -> Result<Header> {
        let b = self.buf;
        if b.len() < 8 || pos > b.len() - 8 {
            let tag = (pos + 4 <= b.len()).then(|| read_tag(b, pos, enc.big));
            return Err(self.err(pos, tag, "truncated element header"));
        }
        let tag = read_tag(b, pos, enc.big);
        if tag >> 16 == 0xFFFE {
            // Items and delimiters: no VR in any transfer syntax.
            let len = rd32(b, pos + 4, enc.big);
            return Ok(Header { tag, vr: [0, 0], explicit_vr: false, len, value: pos + 8 });
        }
        if enc.explicit {
            let vr = [b[pos + 4], b[pos + 5]];
            if vr[0].is_ascii_uppercase() && vr[1].is_ascii_uppercase() {
                if has_long_length(vr) {
                    if pos + 12 > b.len() {
                        return Err(self.err(pos, Some(tag), "truncated element header"));
                    }
                    let len = rd32(b, pos + 8, enc.big);
                    return Ok(Header { tag, vr, explicit_vr: true, len, value: pos + 12 });
                }
                // Short VRs, and unknown ones (as pydicom does).
                let len = u32::from(rd16(b, pos + 6, enc.big));
                return Ok(Header { tag, vr, explicit_vr: true, len, value: pos + 8 });
            }
            // Not a VR: the writer switched to implicit VR for this element.
        }
        let len = rd32(b, pos + 4, enc.big);
        let vr = dictionary_vr(tag).unwrap_or(*b"UN");
        Ok(Header { tag, vr, explicit_vr: false, len, value: pos + 8 })
    }

    /// End of a defined-length value, checked against the input.
    #[inline]
    fn value_end(&self, h: &Header) -> Result<usize> {
        let left = self.buf.len() - h.value;
        if h.len as usize > left {
            return Err(self.err(
                h.value,
                Some(h.tag),
                format!("value length {} runs past the end of the data ({left} bytes left)", h.len),
            ));
        }
        Ok(h.value + h.len as usize)
    }

    /// Skips the items of an undefined-length element (a sequence, or encapsulated pixel data,
    /// whose fragments are defined-length items) starting at `pos`; returns the position after
    /// the sequence delimitation item.
    fn skip_sequence(&self, mut pos: usize, tag: u32, enc: Enc, depth: usize) -> Result<usize> {
        if depth > MAX_DEPTH {
            return Err(self.err(pos, Some(tag), format!("sequences nested deeper than {MAX_DEPTH}")));
        }
        loop {
            let h = self.header(pos, enc).map_err(|e| self.in_element(e, pos, tag))?;
            match h.tag {
                ITEM if h.len == UNDEFINED => pos = self.skip_item(h.value, enc, depth)?,
                ITEM => pos = self.value_end(&h)?,
                SEQUENCE_DELIMITER => return Ok(h.value),
                other => {
                    return Err(self.err(
                        pos,
                        Some(tag),
                        format!(
                            "expected an item or a sequence delimiter, found ({:04X},{:04X})",
                            other >> 16,
                            other & 0xFFFF
                        ),
                    ))
                }
            }
        }
    }

    /// Skips the elements of an undefined-length item starting at `pos`; returns the position
    /// after the item delimitation item.
    fn skip_item(&self, mut pos: usize, enc: Enc, depth: usize) -> Result<usize> {
        // Like pydicom, an item of an explicit VR dataset may be implicit VR (UN sequences must
        // be, some writers do it elsewhere): its first element decides.
        let b = self.buf;
        let enc = if enc.explicit
            && pos + 8 <= b.len()
            && read_tag(b, pos, enc.big) >> 16 != 0xFFFE
            && !(b[pos + 4].is_ascii_uppercase() && b[pos + 5].is_ascii_uppercase())
        {
            Enc { explicit: false, ..enc }
        } else {
            enc
        };
        loop {
            let h = self.header(pos, enc)?;
            match h.tag {
                // Its length should be 0; like pydicom, ignore it.
                ITEM_DELIMITER => return Ok(h.value),
                ITEM | SEQUENCE_DELIMITER => {
                    return Err(self.err(pos, Some(h.tag), "item or sequence delimiter inside an item"))
                }
                _ if h.len == UNDEFINED => {
                    pos = self.skip_sequence(h.value, h.tag, h.inner(enc), depth + 1)?
                }
                _ => pos = self.value_end(&h)?,
            }
        }
    }

    /// A truncated header right after a sequence's last item names the sequence.
    fn in_element(&self, e: Error, pos: usize, tag: u32) -> Error {
        match e {
            Error::Malformed { tag: None, reason, .. } => self.err(pos, Some(tag), reason),
            other => other,
        }
    }
}

#[inline]
fn rd16(b: &[u8], p: usize, big: bool) -> u16 {
    let a = [b[p], b[p + 1]];
    if big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

#[inline]
fn rd32(b: &[u8], p: usize, big: bool) -> u32 {
    let a = [b[p], b[p + 1], b[p + 2], b[p + 3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

#[inline]
fn read_tag(b: &[u8], p: usize, big: bool) -> u32 {
    (u32::from(rd16(b, p, big)) << 16) | u32::from(rd16(b, p + 2, big))
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
fn has_long_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
    )
}

fn is_known_vr(vr: [u8; 2]) -> bool {
    has_long_length(vr)
        || matches!(
            &vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        )
}

fn is_string_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"ST"
            | b"TM"
            | b"UC"
            | b"UI"
            | b"UR"
            | b"UT"
    )
}

/// Width of the numbers of a binary VR (1 for bytes, strings, unknown).
fn number_width(vr: [u8; 2]) -> usize {
    match &vr {
        b"US" | b"SS" | b"OW" | b"AT" => 2,
        b"UL" | b"SL" | b"FL" | b"OF" | b"OL" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    }
}

/// VRs of the tags this module reads in implicit VR: the index tags, the pixel module, the meta
/// group and group lengths. Anything else is opaque ("UN").
pub(crate) fn dictionary_vr(tag: u32) -> Option<[u8; 2]> {
    Some(match tag {
        0x0008_0005 | 0x0008_0008 | 0x0008_0060 | 0x0010_0040 | 0x0018_0015 | 0x0028_0004 => *b"CS",
        0x0008_0012 | 0x0008_0020..=0x0008_0023 | 0x0010_0030 | 0x0040_0244 => *b"DA",
        0x0008_0013 | 0x0008_0030..=0x0008_0033 | 0x0040_0245 => *b"TM",
        0x0002_0002 | 0x0002_0003 | 0x0002_0010 | 0x0002_0012 | 0x0002_0100 => *b"UI",
        0x0008_0016 | 0x0008_0018 | 0x0020_000D | 0x0020_000E => *b"UI",
        0x0002_0013 | 0x0008_0050 | 0x0008_1010 | 0x0020_0010 => *b"SH",
        0x0008_0070 | 0x0008_0080 | 0x0008_1030 | 0x0008_103E | 0x0008_1090 => *b"LO",
        0x0010_0020 | 0x0010_0021 => *b"LO",
        0x0008_0090 | 0x0010_0010 => *b"PN",
        0x0010_1010 => *b"AS",
        0x0002_0016 => *b"AE",
        0x0020_0011 | 0x0020_0013 | 0x0028_0008 => *b"IS",
        0x0028_0002 | 0x0028_0006 | 0x0028_0010 | 0x0028_0011 | 0x0028_0100..=0x0028_0103 => *b"US",
        0x0002_0001 | 0x0002_0102 | 0xFFFC_FFFC => *b"OB",
        TAG_PIXEL_DATA => *b"OW",
        t if t & 0xFFFF == 0 => *b"UL",
        _ => return None,
    })
}

/// The VR a value is interpreted with: the file's, except that UN (and unknown implicit VR) takes
/// the dictionary VR when there is one, as pydicom does.
fn effective_vr(h: &Header) -> [u8; 2] {
    if h.vr == *b"UN" {
        dictionary_vr(h.tag).unwrap_or(h.vr)
    } else {
        h.vr
    }
}

fn make_attr(h: &Header, value: &[u8], enc: Enc) -> Attr {
    let vr = effective_vr(h);
    let value = if is_string_vr(vr) {
        let keep = value.iter().rposition(|&c| c != b' ' && c != 0).map_or(0, |i| i + 1);
        value[..keep].to_vec()
    } else {
        let mut v = value.to_vec();
        let width = number_width(vr);
        if enc.big && width > 1 {
            for chunk in v.chunks_exact_mut(width) {
                chunk.reverse();
            }
        }
        v
    };
    Attr { tag: h.tag, vr, value }
}

/// A US value (or a number written as a string by a sloppy writer).
fn read_u16(h: &Header, value: &[u8], enc: Enc) -> Option<u16> {
    read_uint(h, value, enc).map(|v| v.min(u32::from(u16::MAX)) as u16)
}

/// An unsigned number from a string VR (IS) or the first binary number of the value.
fn read_uint(h: &Header, value: &[u8], enc: Enc) -> Option<u32> {
    let vr = effective_vr(h);
    if is_string_vr(vr) {
        let s = std::str::from_utf8(value).ok()?;
        let s = s.trim_matches([' ', '\0']);
        let s = s.split('\\').next().unwrap_or("");
        return s.parse::<u32>().ok();
    }
    match (number_width(vr), value.len()) {
        (4, 4..) => Some(rd32(value, 0, enc.big)),
        (_, 2..) => Some(u32::from(rd16(value, 0, enc.big))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- helpers to build datasets -----------------------------------------------------------

    fn tag_bytes(tag: u32, big: bool) -> Vec<u8> {
        let (g, e) = ((tag >> 16) as u16, tag as u16);
        if big {
            [g.to_be_bytes(), e.to_be_bytes()].concat()
        } else {
            [g.to_le_bytes(), e.to_le_bytes()].concat()
        }
    }

    /// An explicit VR element.
    fn ex(tag: u32, vr: &[u8; 2], value: &[u8], big: bool) -> Vec<u8> {
        let mut out = tag_bytes(tag, big);
        out.extend_from_slice(vr);
        if has_long_length(*vr) {
            out.extend_from_slice(&[0, 0]);
            let len = value.len() as u32;
            out.extend_from_slice(&if big { len.to_be_bytes() } else { len.to_le_bytes() });
        } else {
            let len = value.len() as u16;
            out.extend_from_slice(&if big { len.to_be_bytes() } else { len.to_le_bytes() });
        }
        out.extend_from_slice(value);
        out
    }

    /// An explicit VR LE element with undefined length (contents follow separately).
    fn ex_undef(tag: u32, vr: &[u8; 2]) -> Vec<u8> {
        let mut out = tag_bytes(tag, false);
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        out
    }

    /// An implicit VR LE element (or item/delimiter) with the given raw length field.
    fn im_len(tag: u32, len: u32, value: &[u8]) -> Vec<u8> {
        let mut out = tag_bytes(tag, false);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn im(tag: u32, value: &[u8]) -> Vec<u8> {
        im_len(tag, value.len() as u32, value)
    }

    fn part10(ts: &str, dataset: &[u8]) -> Vec<u8> {
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let body = [ex(0x0002_0001, b"OB", &[0, 1], false), ex(0x0002_0010, b"UI", &uid, false)].concat();
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend(ex(0x0002_0000, b"UL", &(body.len() as u32).to_le_bytes(), false));
        out.extend(body);
        out.extend_from_slice(dataset);
        out
    }

    fn attr(p: &Parsed, tag: u32) -> Option<&[u8]> {
        p.attrs.iter().find(|a| a.tag == tag).map(|a| a.value.as_slice())
    }

    fn small_dataset(big: bool) -> Vec<u8> {
        [
            ex(0x0008_0018, b"UI", b"1.2.3\0", big),
            ex(0x0008_0060, b"CS", b"CT", big),
            ex(0x0010_0010, b"PN", b"Doe^John ", big),
            ex(0x0028_0010, b"US", &if big { 2u16.to_be_bytes() } else { 2u16.to_le_bytes() }, big),
            ex(0x0028_0011, b"US", &if big { 3u16.to_be_bytes() } else { 3u16.to_le_bytes() }, big),
            ex(0x0028_0100, b"US", &if big { 16u16.to_be_bytes() } else { 16u16.to_le_bytes() }, big),
            ex(TAG_PIXEL_DATA, b"OW", &[1u8; 12], big),
        ]
        .concat()
    }

    // ---- unit tests ----------------------------------------------------------------------------

    #[test]
    fn index_tags_sorted_and_unique() {
        assert!(INDEX_TAGS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(INDEX_TAGS.len(), 45);
        for &t in INDEX_TAGS {
            assert!(dictionary_vr(t).is_some(), "no implicit VR for {t:08X}");
        }
    }

    #[test]
    fn explicit_le_part10() {
        let ds = small_dataset(false);
        let file = part10(TS_EXPLICIT_LE, &ds);
        let p = parse_file(&file, INDEX_TAGS).unwrap();
        assert_eq!(p.dataset_offset, file.len() - ds.len());
        assert_eq!(p.transfer_syntax, TS_EXPLICIT_LE);
        assert!(!p.ts_inferred);
        assert_eq!(p.meta.len(), 3);
        assert_eq!(attr(&p, 0x0008_0018), Some(&b"1.2.3"[..]));
        assert_eq!(attr(&p, 0x0010_0010), Some(&b"Doe^John"[..]));
        assert_eq!(attr(&p, 0x0028_0010), Some(&[2u8, 0][..]));
        let px = p.pixel.unwrap();
        assert_eq!(&file[p.dataset_offset + px.offset..][..px.length], &[1u8; 12]);
        assert_eq!((px.rows, px.columns, px.bits_allocated, px.samples_per_pixel), (2, 3, 16, 1));
        assert_eq!(px.number_of_frames, 1);
        assert!(!px.encapsulated && !px.big_endian);
        // Only wanted tags, in file order.
        let p = parse_file(&file, &[0x0010_0010, 0x0028_0011]).unwrap();
        assert_eq!(p.attrs.iter().map(|a| a.tag).collect::<Vec<_>>(), vec![0x0010_0010, 0x0028_0011]);
        assert!(parse_file(&file, &[]).unwrap().attrs.is_empty());
    }

    #[test]
    fn big_endian_values_come_out_little_endian() {
        let ds = small_dataset(true);
        let file = part10(TS_EXPLICIT_BE, &ds);
        let p = parse_file(&file, INDEX_TAGS).unwrap();
        assert_eq!(attr(&p, 0x0028_0011), Some(&[3u8, 0][..]));
        let px = p.pixel.unwrap();
        assert!(px.big_endian);
        assert_eq!((px.rows, px.columns), (2, 3));
        // Bare big endian dataset: inferred.
        let p = parse_file(&ds, INDEX_TAGS).unwrap();
        assert!(p.ts_inferred);
        assert_eq!(p.transfer_syntax, TS_EXPLICIT_BE);
        assert_eq!(attr(&p, 0x0008_0018), Some(&b"1.2.3"[..]));
    }

    #[test]
    fn implicit_bare_dataset_with_sequences() {
        let seq = [
            im_len(0x0008_1140, UNDEFINED, &[]),
            im_len(ITEM, UNDEFINED, &[]),
            im(0x0008_1150, b"1.2\0"),
            // nested private sequence with a defined-length item
            im_len(0x0009_1010, UNDEFINED, &[]),
            im(ITEM, &im(0x0008_0018, b"9.9\0")),
            im_len(SEQUENCE_DELIMITER, 0, &[]),
            im_len(ITEM_DELIMITER, 0, &[]),
            im_len(SEQUENCE_DELIMITER, 0, &[]),
        ]
        .concat();
        let ds = [im(0x0008_0016, b"1.2.840\0"), seq, im(0x0008_0018, b"4.5.6\0"), im(0x0028_0010, &[7, 0])]
            .concat();
        let p = parse_file(&ds, INDEX_TAGS).unwrap();
        assert!(p.ts_inferred);
        assert_eq!(p.transfer_syntax, TS_IMPLICIT_LE);
        assert_eq!(p.dataset_offset, 0);
        // the SOP Instance UID inside the sequence is not top level
        assert_eq!(attr(&p, 0x0008_0018), Some(&b"4.5.6"[..]));
        assert_eq!(p.attrs.iter().filter(|a| a.tag == 0x0008_0018).count(), 1);
        assert_eq!(p.attrs.iter().find(|a| a.tag == 0x0028_0010).unwrap().vr, *b"US");
        assert!(p.pixel.is_none());
        // Same with a known transfer syntax.
        let q = parse_dataset(&ds, "1.2.840.10008.1.2\0", INDEX_TAGS).unwrap();
        assert_eq!(q.attrs, p.attrs);
        assert_eq!(q.transfer_syntax, TS_IMPLICIT_LE);
        assert!(!q.ts_inferred);
    }

    #[test]
    fn encapsulated_pixel_data_length_includes_delimiter() {
        let frags = [
            im(ITEM, &[]),                                         // empty basic offset table
            im(ITEM, &[0xFF, 0xD8, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0]), // contains delimiter bytes
            im_len(SEQUENCE_DELIMITER, 0, &[]),
        ]
        .concat();
        let ds = [
            ex(0x0008_0018, b"UI", b"1.2\0", false),
            ex_undef(TAG_PIXEL_DATA, b"OB"),
            frags.clone(),
            ex(0xFFFC_FFFC, b"OB", &[0; 4], false),
        ]
        .concat();
        let file = part10("1.2.840.10008.1.2.4.50", &ds);
        let p = parse_file(&file, INDEX_TAGS).unwrap();
        let px = p.pixel.unwrap();
        assert!(px.encapsulated);
        assert_eq!(px.length, frags.len());
        assert_eq!(&ds[px.offset..px.offset + px.length], &frags[..]);
        // A fragment that is not an item.
        let bad = [ex_undef(TAG_PIXEL_DATA, b"OB"), im(0x0008_0018, b"12")].concat();
        let e = parse_dataset(&bad, "1.2.840.10008.1.2.4.50", &[]).unwrap_err();
        assert!(matches!(e, Error::Malformed { offset: 12, tag: Some(TAG_PIXEL_DATA), .. }), "{e}");
    }

    #[test]
    fn meta_without_preamble_and_with_wrong_group_length() {
        let ds = small_dataset(false);
        let uid = b"1.2.840.10008.1.2.1\0";
        let meta = [
            ex(0x0002_0000, b"UL", &999u32.to_le_bytes(), false),
            ex(0x0002_0010, b"UI", uid, false),
            ex(0x0002_0013, b"SH", b"X ", false),
        ]
        .concat();
        let file = [meta.clone(), ds.clone()].concat();
        let p = parse_file(&file, INDEX_TAGS).unwrap();
        assert_eq!(p.dataset_offset, meta.len());
        assert_eq!(p.meta.len(), 3);
        assert_eq!(p.meta[2].value, b"X");
        assert_eq!(attr(&p, 0x0008_0018), Some(&b"1.2.3"[..]));
        // No transfer syntax in the meta: inferred from the dataset.
        let meta = ex(0x0002_0001, b"OB", &[0, 1], false);
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend(&meta);
        let ds = [im(0x0008_0018, b"7.7\0"), im(0x0028_0011, &[5, 0])].concat();
        file.extend(&ds);
        let p = parse_file(&file, INDEX_TAGS).unwrap();
        assert!(p.ts_inferred);
        assert_eq!(p.transfer_syntax, TS_IMPLICIT_LE);
        assert_eq!(p.dataset_offset, 132 + meta.len());
        assert_eq!(attr(&p, 0x0028_0011), Some(&[5u8, 0][..]));
    }

    #[test]
    fn deflated() {
        use std::io::Write;
        let ds = small_dataset(false);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&ds).unwrap();
        let file = part10(TS_DEFLATED_LE, &enc.finish().unwrap());
        let p = parse_file(&file, INDEX_TAGS).unwrap();
        assert_eq!(p.transfer_syntax, TS_DEFLATED_LE);
        assert!(p.pixel.is_none());
        assert_eq!(attr(&p, 0x0008_0018), Some(&b"1.2.3"[..]));
        let garbage = part10(TS_DEFLATED_LE, &[0xFF; 40]);
        assert!(matches!(parse_file(&garbage, &[]), Err(Error::Malformed { .. })));
    }

    #[test]
    fn sloppy_writers() {
        // explicit dataset switching to implicit for one element, odd length, unknown VR,
        // UN with undefined length holding an implicit sequence, trailing zeros.
        let un_seq = [
            ex_undef(0x0009_0010, b"UN"),
            im_len(ITEM, UNDEFINED, &[]),
            im(0x0009_1001, b"abc"),
            im_len(ITEM_DELIMITER, 0, &[]),
            im_len(SEQUENCE_DELIMITER, 0, &[]),
        ]
        .concat();
        let ds = [
            ex(0x0008_0018, b"UI", b"1.2.3", false),
            im(0x0008_0060, b"MR"),
            ex(0x0009_0011, b"XY", b"zz", false),
            un_seq,
            ex(0x0010_0010, b"UN", b"Pat^Name  ", false),
            vec![0; 7],
        ]
        .concat();
        let p = parse_dataset(&ds, TS_EXPLICIT_LE, INDEX_TAGS).unwrap();
        assert_eq!(attr(&p, 0x0008_0018), Some(&b"1.2.3"[..]));
        assert_eq!(attr(&p, 0x0008_0060), Some(&b"MR"[..]));
        let pn = p.attrs.iter().find(|a| a.tag == 0x0010_0010).unwrap();
        assert_eq!((pn.vr, pn.value.as_slice()), (*b"PN", &b"Pat^Name"[..]));
    }

    #[test]
    fn errors_name_offset_and_tag() {
        let ds = small_dataset(false);
        let file = part10(TS_EXPLICIT_LE, &ds);
        // Cut inside the pixel data value.
        let cut = &file[..file.len() - 3];
        match parse_file(cut, &[]) {
            Err(Error::Malformed { offset, tag, .. }) => {
                assert_eq!(offset as usize, file.len() - 12);
                assert_eq!(tag, Some(TAG_PIXEL_DATA));
            }
            other => panic!("{other:?}"),
        }
        // Cut inside a header.
        let at = file.len() - ds.len() + 3;
        assert!(matches!(parse_file(&file[..at], &[]), Err(Error::Malformed { .. })));
        // Not DICOM.
        for junk in
            [&b""[..], b"hello world, this is text\n", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"{\"a\": 1}"]
        {
            assert!(matches!(parse_file(junk, &[]), Err(Error::NotDicom { .. })), "{junk:?}");
        }
        // A bogus huge length is an error, not an allocation.
        let bogus = [ex_undef(0x0008_1140, b"SQ"), im_len(ITEM, 0xFFFF_FFF0, &[])].concat();
        assert!(matches!(parse_dataset(&bogus, TS_EXPLICIT_LE, &[]), Err(Error::Malformed { .. })));
    }

    #[test]
    fn zero_runs_stay_linear() {
        // 4 MB of (0000,0000) elements with length 0 and then one byte: not quadratic.
        let mut ds = vec![0u8; 4 << 20];
        ds.push(1);
        let t = std::time::Instant::now();
        assert!(parse_dataset(&ds, TS_EXPLICIT_LE, &[]).is_err());
        assert!(t.elapsed().as_secs_f64() < 1.0);
        // Trailing zeros after a dataset are padding.
        let ds = [small_dataset(false), vec![0; 3]].concat();
        assert!(parse_dataset(&ds, TS_EXPLICIT_LE, &[]).unwrap().pixel.is_some());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut ds = Vec::new();
        for _ in 0..100_000 {
            ds.extend(im_len(0x0009_1010, UNDEFINED, &[]));
            ds.extend(im_len(ITEM, UNDEFINED, &[]));
        }
        let e = parse_dataset(&ds, TS_IMPLICIT_LE, &[]).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
        // 60 levels are fine.
        let mut ds = Vec::new();
        for _ in 0..60 {
            ds.extend(im_len(0x0009_1010, UNDEFINED, &[]));
            ds.extend(im_len(ITEM, UNDEFINED, &[]));
        }
        for _ in 0..60 {
            ds.extend(im_len(ITEM_DELIMITER, 0, &[]));
            ds.extend(im_len(SEQUENCE_DELIMITER, 0, &[]));
        }
        ds.extend(im(0x0010_0020, b"ID"));
        let p = parse_dataset(&ds, TS_IMPLICIT_LE, INDEX_TAGS).unwrap();
        assert_eq!(attr(&p, 0x0010_0020), Some(&b"ID"[..]));
    }

    // ---- robustness: truncation, garbage, mutation ----------------------------------------------

    use crate::testutil::Rng;

    /// Top-level element boundaries (relative to the dataset) of a parsable file, with the same
    /// primitives as the parser.
    fn top_level_ends(dataset: &[u8], enc: Enc) -> Vec<usize> {
        let cur = Cursor { buf: dataset, base: 0 };
        let mut ends = vec![0];
        let mut pos = 0;
        while pos < dataset.len() {
            let h = cur.header(pos, enc).unwrap();
            pos = if h.len == UNDEFINED {
                cur.skip_sequence(h.value, h.tag, h.inner(enc), 1).unwrap()
            } else {
                cur.value_end(&h).unwrap()
            };
            ends.push(pos);
        }
        ends
    }

    fn data_dirs() -> Vec<std::path::PathBuf> {
        let site = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SITE_PACKAGES);
        vec![site.join("data_store/data"), site.join("pydicom/data/test_files")]
    }

    /// Relative to this crate (core/ in the repository).
    const SITE_PACKAGES: &str = "../.venv/lib/python3.11/site-packages";

    fn corpus_file(name: &str) -> Option<Vec<u8>> {
        data_dirs().iter().find_map(|d| std::fs::read(d.join(name)).ok())
    }

    #[test]
    fn every_truncation_is_an_error_unless_on_an_element_boundary() {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for name in [
            "MR_small.dcm",
            "rtplan.dcm",
            "JPEG2000.dcm",
            "SC_rgb_small_odd_big_endian.dcm",
            "ExplVR_BigEndNoMeta.dcm",
            "priv_SQ.dcm",
            "image_dfl.dcm",
        ] {
            if let Some(bytes) = corpus_file(name) {
                files.push((name.into(), bytes));
            }
        }
        // And a synthetic file, so the test means something without the corpus.
        let ds = [small_dataset(false), ex_undef(0x0009_1010, b"SQ"), im(ITEM, b"\x08\0\x18\0UI\x02\0AB")]
            .concat();
        let ds = [ds, im_len(SEQUENCE_DELIMITER, 0, &[])].concat();
        files.push(("synthetic".into(), part10(TS_EXPLICIT_LE, &ds)));
        for (name, bytes) in files {
            let full = parse_file(&bytes, INDEX_TAGS).unwrap();
            let (enc, deflated) = framing(&full.transfer_syntax);
            // For a deflated dataset, any cut inside the stream is an error (image_dfl.dcm has 8
            // bytes after its stream: a gzip-style CRC-32 and size).
            let ends = if deflated {
                let mut d = flate2::Decompress::new(false);
                let mut sink = Vec::with_capacity(1 << 20);
                d.decompress_vec(&bytes[full.dataset_offset..], &mut sink, flate2::FlushDecompress::Finish)
                    .unwrap();
                let stream_end = d.total_in() as usize;
                (stream_end..=bytes.len() - full.dataset_offset).collect()
            } else {
                top_level_ends(&bytes[full.dataset_offset..], enc)
            };
            // Inflating is slow in a debug build: sample the cuts inside a deflated stream.
            let step = if deflated { 29 } else { 1 };
            let cuts = (0..bytes.len()).step_by(step).chain(bytes.len().saturating_sub(64)..bytes.len());
            for n in cuts {
                let r = parse_file(&bytes[..n], INDEX_TAGS);
                let in_dataset = n >= full.dataset_offset;
                let on_boundary = in_dataset && ends.binary_search(&(n - full.dataset_offset)).is_ok();
                match r {
                    Ok(p) => {
                        assert!(on_boundary || n <= full.dataset_offset, "{name}: prefix {n} parsed");
                        assert!(p.dataset_offset <= n);
                        if let Some(px) = p.pixel {
                            assert!(p.dataset_offset + px.offset + px.length <= n);
                        }
                    }
                    Err(Error::Malformed { offset, .. }) => {
                        assert!(offset as usize <= n, "{name}: {n}")
                    }
                    Err(Error::NotDicom { .. }) => assert!(n < 140 || !in_dataset, "{name}: {n}"),
                    Err(e) => panic!("{name}: prefix {n}: {e}"),
                }
            }
        }
    }

    #[test]
    fn garbage_and_mutations_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let check = |b: &[u8]| {
            if let Ok(p) = parse_file(b, INDEX_TAGS) {
                assert!(p.dataset_offset <= b.len());
                if let Some(px) = p.pixel {
                    assert!(p.dataset_offset + px.offset + px.length <= b.len());
                }
            }
            for ts in [TS_IMPLICIT_LE, TS_EXPLICIT_LE, TS_EXPLICIT_BE, TS_DEFLATED_LE] {
                if let Ok(Some(px)) = parse_dataset(b, ts, INDEX_TAGS).map(|p| p.pixel) {
                    assert!(px.offset + px.length <= b.len());
                }
            }
        };
        // Random bytes, with a bias towards structural values.
        for _ in 0..3000 {
            let len = rng.below(300);
            let b: Vec<u8> = (0..len)
                .map(|_| match rng.below(8) {
                    0 => 0xFF,
                    1 => 0xFE,
                    2 => 0xE0,
                    3 => 0,
                    _ => rng.next() as u8,
                })
                .collect();
            check(&b);
        }
        // Mutated real files (a few random bytes overwritten).
        let mut seeds: Vec<Vec<u8>> =
            ["rtplan.dcm", "JPEG2000.dcm", "image_dfl.dcm", "ExplVR_BigEnd.dcm", "nested_priv_SQ.dcm"]
                .iter()
                .filter_map(|n| corpus_file(n))
                .collect();
        seeds.push(part10(TS_EXPLICIT_LE, &small_dataset(false)));
        for seed in &seeds {
            for _ in 0..200 {
                let mut b = seed.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = match rng.below(4) {
                        0 => 0xFF,
                        1 => 0,
                        _ => rng.next() as u8,
                    };
                }
                check(&b);
            }
        }
    }

    // ---- corpus --------------------------------------------------------------------------------

    /// Files of the corpus that pydicom "reads" but that are broken: for us they are errors,
    /// which is what an archive must say about them. pydicom accepts a value length that runs
    /// past the end of the file (it keeps the bytes there are).
    const BROKEN: &[&str] = &[
        // pixel data value cut short
        "MR_truncated.dcm",
        // cut inside a nested sequence's value
        "rtplan_truncated.dcm",
        // encapsulated pixel data without its sequence delimiter (pydicom drops the pixel data)
        "emri_small_jpeg_2k_lossless_too_short.dcm",
        // CT_small.dcm's dataset behind one stray byte: pydicom reads one garbage element,
        // (0820,0500), whose length runs 170 MB past the end of the file
        "no_meta.dcm",
    ];

    #[test]
    fn corpus_parses() {
        let mut seen = 0;
        for dir in data_dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                let bytes = std::fs::read(&path).unwrap();
                let r = parse_file(&bytes, INDEX_TAGS);
                seen += 1;
                if !name.ends_with(".dcm") {
                    assert!(r.is_err(), "{name} is not DICOM but parsed");
                    continue;
                }
                if BROKEN.contains(&name.as_str()) {
                    assert!(r.is_err(), "{name}: {r:?}");
                    continue;
                }
                let p = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(p.dataset_offset <= bytes.len());
                if let Some(px) = &p.pixel {
                    assert!(p.dataset_offset + px.offset + px.length <= bytes.len(), "{name}");
                }
                // The dataset alone, with the transfer syntax, parses the same.
                if !p.ts_inferred {
                    let q =
                        parse_dataset(&bytes[p.dataset_offset..], &p.transfer_syntax, INDEX_TAGS).unwrap();
                    assert_eq!((&q.attrs, &q.pixel), (&p.attrs, &p.pixel), "{name}");
                }
            }
        }
        assert!(seen == 0 || seen > 100, "only {seen} corpus files");
    }

    /// Compares with pydicom: `DICOMVAULT_PYDICOM_EXPECT` names a TSV (path, key, value) made by
    /// a pydicom script (tools/expect.py in the parser's scratch crate). Skipped when unset.
    #[test]
    fn corpus_agrees_with_pydicom() {
        let Ok(path) = std::env::var("DICOMVAULT_PYDICOM_EXPECT") else {
            return;
        };
        let tsv = std::fs::read_to_string(path).unwrap();
        let mut by_file: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
        for line in tsv.lines() {
            let mut it = line.splitn(3, '\t');
            let (Some(f), Some(k), Some(v)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            by_file.entry(f).or_default().push((k, v));
        }
        let mut failures = Vec::new();
        for (file, kv) in &by_file {
            let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let name = file.rsplit('/').next().unwrap();
            let bytes = std::fs::read(file).unwrap();
            let p = match parse_file(&bytes, INDEX_TAGS) {
                Ok(p) => p,
                Err(e) => {
                    if get("pydicom_ok") == Some("1") && !BROKEN.contains(&name) {
                        failures.push(format!("{name}: pydicom reads it, we fail: {e}"));
                    }
                    continue;
                }
            };
            let mut check = |what: &str, ours: String, theirs: Option<&str>| {
                if let Some(theirs) = theirs {
                    if ours != theirs {
                        failures.push(format!("{name}: {what}: ours {ours:?} pydicom {theirs:?}"));
                    }
                }
            };
            check("dataset_offset", p.dataset_offset.to_string(), get("dataset_offset"));
            if get("ts").is_some() {
                check("ts", p.transfer_syntax.clone(), get("ts"));
            } else {
                let (enc, _) = framing(&p.transfer_syntax);
                check("implicit", u8::from(!enc.explicit).to_string(), get("implicit"));
                check("little", u8::from(!enc.big).to_string(), get("little"));
            }
            for (k, v) in kv {
                if let Some(t) = k.strip_prefix("attr_") {
                    let tag = u32::from_str_radix(t, 16).unwrap();
                    let ours: String =
                        attr(&p, tag).unwrap_or(b"<absent>").iter().map(|b| format!("{b:02x}")).collect();
                    check(k, ours, Some(v));
                }
            }
            if let Some(px) = &p.pixel {
                check("Rows", px.rows.to_string(), get("Rows"));
                check("Columns", px.columns.to_string(), get("Columns"));
                check("BitsAllocated", px.bits_allocated.to_string(), get("BitsAllocated"));
                check("SamplesPerPixel", px.samples_per_pixel.to_string(), get("SamplesPerPixel"));
                check("pixel_offset", (p.dataset_offset + px.offset).to_string(), get("pixel_value_tell"));
                let len = if px.encapsulated { px.length - 8 } else { px.length };
                check("pixel_len", len.to_string(), get("pixel_len"));
                check("pixel_undefined", u8::from(px.encapsulated).to_string(), get("pixel_undefined"));
            } else if get("pixel_value_tell").is_some() {
                failures.push(format!("{name}: pydicom finds pixel data, we do not"));
            }
        }
        assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    }
}
