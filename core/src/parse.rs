//! DICOM Part-10 / dataset reader (STUB: interface only, being implemented).
//!
//! Walks every top-level element of a dataset in any transfer syntax's framing, descending into
//! undefined-length sequences and encapsulated pixel data only to find their ends, and returns the
//! index attributes and the pixel data location without copying pixel bytes.

use crate::error::{Error, Result};

pub const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
pub const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// (7FE0,0010) Pixel Data
pub const TAG_PIXEL_DATA: u32 = 0x7FE0_0010;

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
pub const INDEX_TAGS: &[u32] = &[];

/// Parses a Part-10 file (preamble + DICM + meta + dataset) or a bare dataset (no preamble).
pub fn parse_file(_bytes: &[u8], _wanted: &[u32]) -> Result<Parsed> {
    Err(Error::Unsupported { reason: "parser not built yet".into() })
}

/// Parses a dataset whose transfer syntax is known (as received over DIMSE).
pub fn parse_dataset(_bytes: &[u8], _transfer_syntax: &str, _wanted: &[u32]) -> Result<Parsed> {
    Err(Error::Unsupported { reason: "parser not built yet".into() })
}
