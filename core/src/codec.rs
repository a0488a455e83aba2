//! Lossless codecs for the archive's canonical objects.
//!
//! [`Codec::Hot`] is the hot-tier codec: a cheap reversible 2-D predictor on uncompressed native
//! pixel samples (its residuals zigzag-coded and split into byte planes) followed by zstd, with the
//! bytes around the pixel span (header, trailing elements) compressed by zstd on their own.
//! Already-compressed pixel spans (encapsulated JPEG, J2K...) can be kept verbatim so no CPU is
//! spent on them, and an object that would not shrink by ~3% is kept as [`Codec::Raw`].
//!
//! [`Codec::Cold`] is the cold-tier codec, in [`cold`]: a context-modelling image coder with
//! rANS coding on native 8/16-bit pixel data (~1.13x denser than hot, ~7x slower to encode,
//! ~4x slower to decode);
//! [`encode_cold`] falls back to the hot codec for what it does not model.
//!
//! # Stored format of `Codec::Hot`, versions 1 and 2
//!
//! All integers are little-endian.
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `b"DVH"` then the format version `2` (written) or `1` (read) |
//! | 1 | mode: 0 whole object, 1 filtered pixel span, 2 verbatim pixel span |
//! | 1 | filter id (mode 1; else 0) |
//! | 1 | bytes per sample (mode 1: 1, 2 or 4; else 0) |
//! | 1 | flags: bit 0 big-endian samples, bit 1 planar, bit 2 subtract-green (interleaved RGB) |
//! | 2 | samples per pixel used by the filter (>= 1) |
//! | 2 | reserved, 0 |
//! | 4 | columns used by the filter (0: the span is one row) |
//! | 8 | logical length |
//! | 8 | span offset |
//! | 8 | span length |
//! | 1 | number of sections `n` (1..=[`MAX_SECTIONS`]) |
//! | 17 × n | per section: method (0 stored, 1 zstd), raw length u64, stored length u64 |
//! | ... | the sections' stored bytes, back to back |
//! | 8 | version 2 only: XXH3-64 of the logical bytes |
//! | 4 | CRC-32 of every byte before it |
//!
//! Why version 2's checksum of the decoded bytes: the CRC-32 (and the blob store's record CRC)
//! vouch for the stored bytes only. A read that must know that its decoded bytes are the ones
//! that were stored used to hash them with BLAKE3 (~150 µs per 512 KiB slice, a fifth of a CT
//! C-GET's server CPU); XXH3-64 checks the same decode, every byte of it, in ~20 µs. The encoder
//! takes it from the very bytes it compressed, and the blob's BLAKE3 is checked against a decode
//! of what was written whenever an object is compacted or moved, so a decode that matches it
//! is that object ([`decode_checked_into`]; DESIGN.md section 3.3).
//!
//! Section 0 is "the rest": `logical[..off]`, then (mode 1) the `span_len % bps` tail bytes of
//! the span that do not form a whole sample, then `logical[off + span_len..]`. In mode 0 the span
//! is empty (offset 0, length 0), so the rest is the whole object and there is no other section.
//! Sections 1.. concatenated are the span body: in mode 2 the span bytes (stored as they are,
//! unless a probe of a few chunks finds that they still shrink by zstd, e.g. RLE); in mode 1
//! the `bps` byte planes of the zigzagged residuals (plane 0 = least significant bytes), each
//! `span_len / bps` bytes long. The encoder may cut the body into sections anywhere. A section
//! is zstd only where that saved at least ~3%, so incompressible bytes cost a memcpy to decode.
//!
//! # The filter (mode 1)
//!
//! Samples are read in their byte order; interleaved 3-sample pixels get subtract-green (R-G,
//! G, B-G). The predictor runs per row of `columns * spp` samples (left neighbour = same
//! channel of the previous pixel): 16/32-bit samples use the gradient predictor
//! `left + up - up_left` (decoding it is a running sum plus a vector add, so it stays fast),
//! 8-bit samples the 1-D delta (better on ultrasound speckle). Residuals are zigzag-coded and
//! split into byte planes, one section (zstd frame) per plane; zstd level 1 (min match 7, hash
//! log 12) compresses them. The low planes of 16/32-bit samples are mostly noise, where zstd's
//! match finder costs most and finds least: they get a search step of 16 (`targetLength`, with
//! Huffman-coded literals kept on) when a probe of a 16 KiB chunk shows that this costs less
//! than ~3% of size, else the plain settings. These are encoder choices; the format and the
//! decoder do not depend on them.
//! Span bytes that do not form a whole sample go to the rest section; columns of 0 or larger
//! than the span make the span one row.
//!
//! [`decode`] checks the CRC, every field and every length against `logical_len` before it
//! allocates or decompresses anything, and the output length at the end.

use xxhash_rust::xxh3::xxh3_64;
use zstd::zstd_safe::zstd_sys;

use crate::error::{Error, Result};
use crate::pool::Pool;

pub mod cold;
mod unfilter;

pub use cold::{cold_support, encode_cold, ColdFallback};

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// The hot codec: pixel-aware filter on uncompressed pixel data + zstd; zstd on the rest.
    Hot = 1,
    /// The cold codec ([`cold`]): a context-modelling image coder on native 8/16-bit pixel
    /// data + rANS coding (version 1: adaptive binary arithmetic coding); zstd on the rest.
    Cold = 2,
}

impl Codec {
    pub fn from_u8(v: u8) -> Result<Codec> {
        match v {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Hot),
            2 => Ok(Codec::Cold),
            _ => Err(Error::Codec { reason: format!("unknown codec id {v}") }),
        }
    }
}

/// What the bytes of a [`PixelLayout`] span are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelKind {
    /// Native (uncompressed) samples: filtered, then zstd.
    #[default]
    Filter,
    /// Already compressed (encapsulated JPEG, J2K, RLE... fragments): stored verbatim, no CPU
    /// spent on it; only the bytes around it are compressed.
    Verbatim,
}

/// Where the pixel samples sit inside the buffer being encoded.
///
/// For [`PixelKind::Verbatim`] only `offset` and `length` matter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PixelLayout {
    /// Offset of the first sample (the Pixel Data value) in the buffer.
    pub offset: usize,
    /// Length of the span in bytes. Need not be a multiple of `bytes_per_sample`.
    pub length: usize,
    /// 1, 2 or 4 (Bits Allocated / 8); anything else stores the object unfiltered.
    pub bytes_per_sample: u8,
    /// Samples are big-endian (Explicit VR Big Endian).
    pub big_endian: bool,
    /// Columns of the image; 0 or a value inconsistent with `length` degrades to a 1-D filter.
    pub columns: u32,
    /// Samples Per Pixel (1 gray, 3 RGB/YBR).
    pub samples_per_pixel: u16,
    /// Planar Configuration = 1 (colour-by-plane).
    pub planar: bool,
    pub kind: PixelKind,
}

impl PixelLayout {
    /// A span of native samples to filter.
    pub fn native(
        offset: usize,
        length: usize,
        bytes_per_sample: u8,
        big_endian: bool,
        columns: u32,
        samples_per_pixel: u16,
        planar: bool,
    ) -> Self {
        PixelLayout {
            offset,
            length,
            bytes_per_sample,
            big_endian,
            columns,
            samples_per_pixel,
            planar,
            kind: PixelKind::Filter,
        }
    }

    /// An already-compressed span to keep verbatim.
    pub fn verbatim(offset: usize, length: usize) -> Self {
        PixelLayout { offset, length, kind: PixelKind::Verbatim, ..Default::default() }
    }
}

/// The zstd level the archive uses for the hot tier.
pub const DEFAULT_HOT_LEVEL: i32 = 1;

/// zstd overrides at [`DEFAULT_HOT_LEVEL`]: [min_match, hash_log, target_length, window_log].
const HOT_ZSTD_PARAMS: [u32; 4] = [7, 12, 0, 0];

/// The same for the residual planes: a large search step (target length, i.e. acceleration, of
/// the fast strategy) with the literals still Huffman-coded. Residual planes are mostly order-0
/// entropy plus runs of zeros; the step still finds the runs (matches extend both ways), and
/// the match finder stops paying for every position of the noise.
const HOT_BODY_ZSTD_PARAMS: [u32; 4] = [7, 12, 16, 0];

/// Probe of a verbatim span: this many chunks of this size.
const PROBE_CHUNKS: usize = 8;
const PROBE_CHUNK: usize = 16 << 10;

/// Spans shorter than this are not worth a filter: the object is compressed whole.
const MIN_FILTER_SPAN: usize = 256;

/// Most sections a stored object may have.
pub const MAX_SECTIONS: usize = 8;

const MAGIC: [u8; 3] = *b"DVH";
const VERSION: u8 = 2;
/// Version 1: as 2 without the checksum of the logical bytes (still read).
const VERSION_1: u8 = 1;
/// Version 2's XXH3-64 of the logical bytes, before the CRC.
const CHECK_LEN: usize = 8;
const FIXED_HEADER: usize = 4 + 4 + 4 + 4 + 8 + 8 + 8 + 1;
const SECTION_ENTRY: usize = 17;
const CRC_LEN: usize = 4;

const MODE_WHOLE: u8 = 0;
const MODE_FILTERED: u8 = 1;
const MODE_VERBATIM: u8 = 2;

const METHOD_STORED: u8 = 0;
const METHOD_ZSTD: u8 = 1;

const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_PLANAR: u8 = 2;
const FLAG_SUBTRACT_GREEN: u8 = 4;

/// Predictors of the filter. The ids are part of the stored format.
#[doc(hidden)]
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predictor {
    /// Previous sample of the same channel, across rows (1-D delta).
    Left = 1,
    /// Same sample one row up.
    Up = 2,
    /// left + up - up_left (plane prediction); separable, so decoding is a running sum.
    Gradient = 3,
}

impl Predictor {
    fn from_u8(v: u8) -> Option<Predictor> {
        Some(match v {
            1 => Predictor::Left,
            2 => Predictor::Up,
            3 => Predictor::Gradient,
            _ => return None,
        })
    }
}

/// Tuning knobs of the hot encoder (exposed for the benchmark; the archive uses the defaults).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct HotOptions {
    pub level: i32,
    /// Predictor for 16/32-bit samples.
    pub predictor_wide: Option<Predictor>,
    /// Predictor for 8-bit samples (`None`: plain zstd on the span).
    pub predictor_8: Option<Predictor>,
    /// Apply subtract-green on interleaved 3-sample pixels.
    pub subtract_green: bool,
    /// Compress each byte plane as its own zstd frame (else one frame for the whole body).
    pub split_planes: bool,
    /// zstd overrides, 0 = the level's own: [min_match, hash_log, target_length, window_log].
    pub zparams: [u32; 4],
    /// zstd overrides for the filtered body (the residual planes), same layout as `zparams`.
    pub body_zparams: [u32; 4],
}

impl HotOptions {
    pub fn with_level(level: i32) -> Self {
        HotOptions {
            level,
            predictor_wide: Some(Predictor::Gradient),
            // 8-bit images (ultrasound, secondary capture) are noisier row to row: the 1-D
            // filter beats the gradient there (measured: US geomean 6.29 vs 5.91).
            predictor_8: Some(Predictor::Left),
            subtract_green: true,
            split_planes: true,
            // Measured on the corpus at level 1: min match 7 (+0.5% ratio, fewer sequences to
            // decode) and a 4K-entry hash table (stays in L1/L2; same ratio, faster).
            zparams: if level == DEFAULT_HOT_LEVEL { HOT_ZSTD_PARAMS } else { [0; 4] },
            body_zparams: if level == DEFAULT_HOT_LEVEL { HOT_BODY_ZSTD_PARAMS } else { [0; 4] },
        }
    }
}

/// Encodes `logical` with the hot codec. `layout` says where uncompressed (or, with
/// [`PixelKind::Verbatim`], already compressed) pixel data sits; `None` compresses it whole.
///
/// Returns [`Codec::Raw`] and the bytes as they are when compression saves less than ~3%.
pub fn encode_hot(logical: &[u8], layout: Option<&PixelLayout>, level: i32) -> Result<(Codec, Vec<u8>)> {
    encode_hot_with(logical, layout, &HotOptions::with_level(level))
}

#[doc(hidden)]
pub fn encode_hot_with(
    logical: &[u8],
    layout: Option<&PixelLayout>,
    opts: &HotOptions,
) -> Result<(Codec, Vec<u8>)> {
    let plan = Plan::new(logical.len(), layout, opts);
    let stored = SCRATCH.with(|s| encode_plan(logical, &plan, opts, s), Scratch::trim)?;
    if stored.len() > logical.len() - logical.len() / 32 {
        return Ok((Codec::Raw, logical.to_vec()));
    }
    Ok((Codec::Hot, stored))
}

/// Decodes a stored payload back to the `logical_len` original bytes.
pub fn decode(codec: Codec, stored: &[u8], logical_len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(codec, stored, logical_len, &mut out)?;
    Ok(out)
}

/// [`decode`] into `out`, whose allocation is reused: a reader that decodes object after
/// object of one size (the slices of a series) neither allocates nor zero-fills the output,
/// every byte of which the decoder writes. On error `out` holds unspecified bytes.
pub fn decode_into(codec: Codec, stored: &[u8], logical_len: usize, out: &mut Vec<u8>) -> Result<()> {
    decode_checked_into(codec, stored, logical_len, out, StoredCrc::Unchecked).map(|_| ())
}

/// Who has checked the stored bytes handed to [`decode_checked_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCrc {
    /// Nobody yet (an object store's copy, a peer's, a test's): the codec checks the CRC-32
    /// that ends every hot and cold stream.
    Unchecked,
    /// The local blob store, just now: `BlobStore::get` returns a record's payload only after
    /// its record CRC (CRC-32 over the record header and exactly these bytes, read into this
    /// buffer by that call) matched. The codec's own CRC-32 over the same bytes would detect
    /// nothing more, so it is skipped (~5 µs of a 512 KiB CT slice's ~280 µs decode). Every
    /// field and length is still validated, and the logical bytes' checksum (hot version 2,
    /// cold versions 4 and later) still checks what they decode to.
    RecordChecked,
}

/// [`decode_into`], and whether the decoded bytes were checked against a checksum of the
/// logical bytes that the encoder stored with them (hot format version 2, cold format versions
/// 4 and later: an error if they differ). `false`: only the stored bytes were checked (their CRC, by the
/// codec or as `stored` says by the caller), not what they decode to.
pub fn decode_checked_into(
    codec: Codec,
    stored: &[u8],
    logical_len: usize,
    out: &mut Vec<u8>,
    checked: StoredCrc,
) -> Result<bool> {
    let crc = checked == StoredCrc::Unchecked;
    match codec {
        Codec::Raw => {
            if stored.len() != logical_len {
                return Err(codec_err(format!(
                    "raw payload is {} bytes, expected {logical_len}",
                    stored.len()
                )));
            }
            out.clear();
            out.extend_from_slice(stored);
            Ok(false)
        }
        Codec::Hot => SCRATCH.with(|s| decode_hot(stored, logical_len, crc, s, out), Scratch::trim),
        Codec::Cold => cold::decode_cold_into(stored, logical_len, crc, out),
    }
}

fn codec_err(reason: impl Into<String>) -> Error {
    Error::Codec { reason: reason.into() }
}

// ---------------------------------------------------------------------------------------------
// Plan: what the encoder does with one object.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    mode: u8,
    predictor: u8,
    bps: usize,
    flags: u8,
    spp: usize,
    columns: usize,
    off: usize,
    len: usize,
}

impl Plan {
    fn whole() -> Plan {
        Plan { mode: MODE_WHOLE, predictor: 0, bps: 0, flags: 0, spp: 1, columns: 0, off: 0, len: 0 }
    }

    fn new(total: usize, layout: Option<&PixelLayout>, opts: &HotOptions) -> Plan {
        let Some(l) = layout else {
            return Plan::whole();
        };
        let in_bounds = l.offset.checked_add(l.length).is_some_and(|end| end <= total);
        if !in_bounds || l.length == 0 {
            return Plan::whole();
        }
        if l.kind == PixelKind::Verbatim {
            return Plan { mode: MODE_VERBATIM, off: l.offset, len: l.length, ..Plan::whole() };
        }
        let bps = l.bytes_per_sample as usize;
        let predictor = match bps {
            1 => opts.predictor_8,
            2 | 4 => opts.predictor_wide,
            _ => None,
        };
        let Some(predictor) = predictor else {
            return Plan::whole();
        };
        if l.length < MIN_FILTER_SPAN {
            return Plan::whole();
        }
        let spp = (l.samples_per_pixel as usize).max(1);
        let (spp, columns) = if l.planar { (1, l.columns as usize) } else { (spp, l.columns as usize) };
        let mut flags = 0;
        if l.big_endian {
            flags |= FLAG_BIG_ENDIAN;
        }
        if l.planar {
            flags |= FLAG_PLANAR;
        }
        if opts.subtract_green && spp == 3 {
            flags |= FLAG_SUBTRACT_GREEN;
        }
        Plan {
            mode: MODE_FILTERED,
            predictor: predictor as u8,
            bps,
            flags,
            spp,
            columns,
            off: l.offset,
            len: l.length,
        }
    }

    /// Bytes of the span that go through the filter (whole samples).
    fn body_len(&self) -> usize {
        match self.mode {
            MODE_FILTERED => self.len - self.len % self.bps,
            MODE_VERBATIM => self.len,
            _ => 0,
        }
    }

    /// Geometry of the filter: (left distance, row length) in samples, for `n` samples.
    fn geometry(&self, n: usize) -> (usize, usize) {
        let spp = self.spp.max(1);
        let row = self.columns.saturating_mul(spp);
        // A row longer than the span, or no columns: the span is one row.
        let row = if row == 0 || row > n { n.max(1) } else { row };
        (spp.min(row), row)
    }
}

// ---------------------------------------------------------------------------------------------
// Reusable scratch buffers and contexts, shared by every thread (see [`crate::pool`]); large
// buffers are dropped after use.

#[derive(Default)]
struct Scratch {
    a: Vec<u8>,
    b: Vec<u8>,
    rest: Vec<u8>,
    /// Compression contexts for the rest / verbatim span and for the residual planes.
    cctx: Option<(ZKey, Zc)>,
    bctx: Option<(ZKey, Zc)>,
    probe: Vec<u8>,
    dctx: Option<zstd::bulk::Decompressor<'static>>,
}

/// Buffers above this size are not kept between calls.
const KEEP_SCRATCH: usize = 32 << 20;

impl Scratch {
    fn trim(&mut self) {
        for v in [&mut self.a, &mut self.b, &mut self.rest] {
            if v.capacity() > KEEP_SCRATCH {
                *v = Vec::new();
            }
        }
    }
}

/// Sets of scratch kept idle: about the number of threads that encode or decode at once.
const KEEP_SETS: usize = 8;

static SCRATCH: Pool<Scratch> = Pool::new(KEEP_SETS);

// ---------------------------------------------------------------------------------------------
// Encoder.

fn encode_plan(logical: &[u8], plan: &Plan, opts: &HotOptions, s: &mut Scratch) -> Result<Vec<u8>> {
    let split = opts.split_planes;
    let Scratch { b, rest, cctx, bctx, probe, .. } = s;
    let cctx = Zc::cached(cctx, (opts.level, opts.zparams))?;
    let (off, len) = (plan.off, plan.len);
    let body_len = plan.body_len();

    // The rest: prefix, tail bytes of the span that are not a whole sample, suffix.
    rest.clear();
    rest.extend_from_slice(&logical[..off]);
    rest.extend_from_slice(&logical[off + body_len..off + len]);
    rest.extend_from_slice(&logical[off + len..]);

    // The body: byte planes of the residuals (mode 1), the span as is (mode 2).
    let span = &logical[off..off + body_len];
    // Each piece: bytes, and whether to try the body context (true) or the rest one (false);
    // `None`: store as is.
    let mut pieces: Vec<(&[u8], Option<bool>)> = vec![(&rest[..], Some(false))];
    match plan.mode {
        MODE_FILTERED => {
            let n = body_len / plan.bps;
            filter_encode(span, plan, n, b);
            if split && plan.bps > 1 && n > 0 {
                // The low planes hold the noise; the top plane (mostly runs) and 8-bit
                // residuals (ultrasound: LZ-rich) keep the plain context.
                pieces.extend(b.chunks(n).enumerate().map(|(k, p)| (p, Some(k + 1 < plan.bps))));
            } else {
                pieces.push((&b[..], Some(false)));
            }
        }
        MODE_VERBATIM => {
            let keep = worth_compressing(span, cctx)?;
            pieces.push((span, keep.then_some(false)));
        }
        _ => {}
    }
    let mut bctx = match plan.mode {
        MODE_FILTERED if opts.body_zparams != opts.zparams => {
            Some(Zc::cached(bctx, (opts.level, opts.body_zparams))?)
        }
        _ => None,
    };

    let bound: usize = pieces.iter().map(|(p, _)| zstd::zstd_safe::compress_bound(p.len())).sum();
    let header_len = FIXED_HEADER + SECTION_ENTRY * pieces.len();
    let mut out = Vec::with_capacity(header_len + bound + CHECK_LEN + CRC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(plan.mode);
    out.push(plan.predictor);
    out.push(plan.bps as u8);
    out.push(plan.flags);
    out.extend_from_slice(&(plan.spp.min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(plan.columns.min(u32::MAX as usize) as u32).to_le_bytes());
    out.extend_from_slice(&(logical.len() as u64).to_le_bytes());
    out.extend_from_slice(&(off as u64).to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.push(pieces.len() as u8);
    let table_at = out.len();
    out.resize(header_len, 0);

    for (i, &(piece, ctx)) in pieces.iter().enumerate() {
        let start = out.len();
        let mut method = METHOD_STORED;
        if let Some(body_ctx) = ctx.filter(|_| !piece.is_empty()) {
            let mut z = &mut *cctx;
            if let Some(b) = bctx.as_deref_mut() {
                if body_ctx && accel_pays(piece, z, b, probe)? {
                    z = b;
                }
            }
            let n = z.compress_into(piece, &mut out)?;
            // Less than ~3% saved is not worth the decoder's time.
            if n < piece.len() - piece.len() / 32 {
                method = METHOD_ZSTD;
            } else {
                out.truncate(start);
            }
        }
        if method == METHOD_STORED {
            out.extend_from_slice(piece);
        }
        let stored_len = (out.len() - start) as u64;
        let e = table_at + i * SECTION_ENTRY;
        out[e] = method;
        out[e + 1..e + 9].copy_from_slice(&(piece.len() as u64).to_le_bytes());
        out[e + 9..e + 17].copy_from_slice(&stored_len.to_le_bytes());
    }
    out.extend_from_slice(&xxh3_64(logical).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Probe of a residual plane: the accelerated context is used when it does about as well as
/// the plain one on a chunk from the middle (noise: same size; LZ-rich planes: much worse).
const ACCEL_PROBE: usize = 16 << 10;

fn accel_pays(plane: &[u8], plain: &mut Zc, fast: &mut Zc, buf: &mut Vec<u8>) -> Result<bool> {
    if plane.len() < 4 * ACCEL_PROBE {
        return Ok(false);
    }
    let at = (plane.len() - ACCEL_PROBE) / 2;
    let part = &plane[at..at + ACCEL_PROBE];
    buf.clear();
    let slow = plain.compress_into(part, buf)?;
    buf.clear();
    let quick = fast.compress_into(part, buf)?;
    Ok(quick <= slow + slow / 32)
}

/// Whether a span said to be already compressed still shrinks (weak encapsulations: RLE,
/// JPEG lossless Huffman...): zstd on up to [`PROBE_CHUNKS`] chunks spread over it.
fn worth_compressing(span: &[u8], c: &mut Zc) -> Result<bool> {
    if span.is_empty() {
        return Ok(false);
    }
    let chunk = PROBE_CHUNK.min(span.len());
    let chunks = PROBE_CHUNKS.min(span.len() / chunk);
    let step = (span.len() - chunk) / chunks.saturating_sub(1).max(1);
    let mut buf = Vec::with_capacity(zstd::zstd_safe::compress_bound(chunk));
    let (mut raw, mut packed) = (0, 0);
    for i in 0..chunks {
        let part = &span[i * step..i * step + chunk];
        buf.clear();
        packed += c.compress_into(part, &mut buf)?;
        raw += part.len();
    }
    Ok(packed < raw - raw / 16)
}

/// Level and [`HotOptions::zparams`]-style overrides a [`Zc`] was made with.
type ZKey = (i32, [u32; 4]);

/// A zstd compression context (reused across objects), driven through the raw API because
/// the safe wrapper does not expose the literal compression mode.
struct Zc(std::ptr::NonNull<zstd_sys::ZSTD_CCtx>);

// SAFETY: a zstd compression context has no thread affinity; it may be used from any thread
// as long as no two use it at once, which `&mut` access (one owner, in a pooled Scratch) ensures.
unsafe impl Send for Zc {}

impl Drop for Zc {
    fn drop(&mut self) {
        // SAFETY: the context came from ZSTD_createCCtx and is freed once, here.
        unsafe { zstd_sys::ZSTD_freeCCtx(self.0.as_ptr()) };
    }
}

fn zcheck(r: usize, what: &str) -> Result<usize> {
    // SAFETY: pure function of the return code.
    if unsafe { zstd_sys::ZSTD_isError(r) } != 0 {
        return Err(codec_err(format!("zstd {what}: {}", zstd::zstd_safe::get_error_name(r))));
    }
    Ok(r)
}

impl Zc {
    /// The context cached in `slot` if it was made for `key`, else a new one put there.
    fn cached(slot: &mut Option<(ZKey, Zc)>, key: ZKey) -> Result<&mut Zc> {
        match slot {
            Some((k, _)) if *k == key => {}
            _ => *slot = Some((key, Zc::new(key)?)),
        }
        Ok(&mut slot.as_mut().expect("just set").1)
    }

    fn new((level, [mml, hlog, tlen, wlog]): ZKey) -> Result<Zc> {
        use zstd_sys::ZSTD_cParameter as C;
        // SAFETY: no arguments; null means out of memory.
        let ctx = std::ptr::NonNull::new(unsafe { zstd_sys::ZSTD_createCCtx() })
            .ok_or_else(|| codec_err("zstd init: out of memory"))?;
        let z = Zc(ctx);
        let mut params = vec![(C::ZSTD_c_compressionLevel, level)];
        for (v, p) in [
            (mml, C::ZSTD_c_minMatch),
            (hlog, C::ZSTD_c_hashLog),
            (tlen, C::ZSTD_c_targetLength),
            (wlog, C::ZSTD_c_windowLog),
        ] {
            if v != 0 {
                params.push((p, v.min(i32::MAX as u32) as i32));
            }
        }
        // ZSTD_c_literalCompressionMode = ZSTD_ps_enable: keep Huffman-coding literals even
        // with a target length on the fast strategy (which otherwise turns it off).
        // `literal_compression_stays_on` checks that this parameter still means that.
        params.push((C::ZSTD_c_experimentalParam5, 1));
        for (p, v) in params {
            // SAFETY: valid context; zstd range-checks the value.
            zcheck(unsafe { zstd_sys::ZSTD_CCtx_setParameter(z.0.as_ptr(), p, v) }, "init")?;
        }
        Ok(z)
    }

    /// Appends one zstd frame of `src` to `out`; returns its length.
    fn compress_into(&mut self, src: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        out.reserve(zstd::zstd_safe::compress_bound(src.len()));
        let dst = out.spare_capacity_mut();
        // SAFETY: zstd writes at most `dst.len()` bytes into `dst` and reads `src.len()`.
        let n = unsafe {
            zstd_sys::ZSTD_compress2(
                self.0.as_ptr(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                src.as_ptr().cast(),
                src.len(),
            )
        };
        let n = zcheck(n, "compress")?;
        // SAFETY: the first `n` bytes of the spare capacity were just written.
        unsafe { out.set_len(out.len() + n) };
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder.

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let v = self.b.get(self.pos..self.pos + N).ok_or_else(|| codec_err("truncated header"))?;
        self.pos += N;
        Ok(v.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

struct Section {
    method: u8,
    raw_len: usize,
    stored: std::ops::Range<usize>,
}

/// Decodes a hot stream; `Ok(true)`: its checksum of the logical bytes (version 2) matched.
/// `check_crc`: whether to check the stream's CRC-32 (see [`StoredCrc`]).
fn decode_hot(
    stored: &[u8],
    logical_len: usize,
    check_crc: bool,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<bool> {
    if stored.len() < FIXED_HEADER + SECTION_ENTRY + CRC_LEN {
        return Err(codec_err(format!("stored object too short ({} bytes)", stored.len())));
    }
    let (body, crc) = stored.split_at(stored.len() - CRC_LEN);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if check_crc && crc32fast::hash(body) != crc {
        return Err(codec_err("checksum mismatch"));
    }
    let mut r = Reader { b: body, pos: 0 };
    let magic = r.take::<3>()?;
    let version = r.u8()?;
    if magic != MAGIC {
        return Err(codec_err("bad magic"));
    }
    // Version 2 ends with the logical bytes' checksum; the sections end before it.
    let (body, check) = match version {
        VERSION if body.len() >= FIXED_HEADER + SECTION_ENTRY + CHECK_LEN => {
            let (sections, check) = body.split_at(body.len() - CHECK_LEN);
            (sections, Some(u64::from_le_bytes(check.try_into().expect("8 bytes"))))
        }
        VERSION => return Err(codec_err(format!("stored object too short ({} bytes)", stored.len()))),
        VERSION_1 => (body, None),
        _ => return Err(codec_err(format!("unsupported hot format version {version}"))),
    };
    let mode = r.u8()?;
    let predictor = r.u8()?;
    let bps = r.u8()? as usize;
    let flags = r.u8()?;
    let spp = r.u16()? as usize;
    if r.u16()? != 0 {
        return Err(codec_err("reserved header field is not zero"));
    }
    let columns = r.u32()? as usize;
    let stored_logical = r.u64()?;
    let off = r.u64()?;
    let len = r.u64()?;
    let nsect = r.u8()? as usize;

    if stored_logical != logical_len as u64 {
        return Err(codec_err(format!(
            "stored object is for {stored_logical} bytes, expected {logical_len}"
        )));
    }
    let end = off.checked_add(len).filter(|&e| e <= stored_logical);
    if end.is_none() {
        return Err(codec_err("pixel span outside the object"));
    }
    let (off, len) = (off as usize, len as usize);
    let plan = Plan { mode, predictor, bps, flags, spp, columns, off, len };
    match mode {
        MODE_WHOLE if off == 0 && len == 0 && predictor == 0 && bps == 0 && flags == 0 => {}
        MODE_VERBATIM if predictor == 0 && bps == 0 && flags == 0 => {}
        MODE_FILTERED
            if matches!(bps, 1 | 2 | 4)
                && Predictor::from_u8(predictor).is_some()
                && spp >= 1
                && flags & !(FLAG_BIG_ENDIAN | FLAG_PLANAR | FLAG_SUBTRACT_GREEN) == 0
                && (flags & FLAG_SUBTRACT_GREEN == 0 || spp == 3) => {}
        _ => return Err(codec_err(format!("bad header (mode {mode}, filter {predictor}, bps {bps})"))),
    }
    let body_len = plan.body_len();
    if nsect == 0 || nsect > MAX_SECTIONS || (mode == MODE_WHOLE) != (nsect == 1) {
        return Err(codec_err(format!("bad section count {nsect}")));
    }

    // Section table: lengths must add up exactly, both raw and stored.
    let mut sections = Vec::with_capacity(nsect);
    let mut at = FIXED_HEADER + SECTION_ENTRY * nsect;
    let mut body_sum: usize = 0;
    for i in 0..nsect {
        let method = r.u8()?;
        let raw_len = r.u64()?;
        let stored_len = r.u64()?;
        if method > METHOD_ZSTD {
            return Err(codec_err(format!("unknown section method {method}")));
        }
        let (Ok(raw_len), Ok(stored_len)) = (usize::try_from(raw_len), usize::try_from(stored_len)) else {
            return Err(codec_err("section length overflows"));
        };
        if raw_len > logical_len || stored_len > body.len() - at.min(body.len()) {
            return Err(codec_err("section length out of range"));
        }
        if method == METHOD_STORED && raw_len != stored_len {
            return Err(codec_err("stored section length mismatch"));
        }
        if i == 0 {
            if raw_len != logical_len - body_len {
                return Err(codec_err("rest section has the wrong length"));
            }
        } else {
            body_sum += raw_len;
        }
        sections.push(Section { method, raw_len, stored: at..at + stored_len });
        at += stored_len;
    }
    if at != body.len() {
        return Err(codec_err("section lengths do not cover the payload"));
    }
    if body_sum != body_len {
        return Err(codec_err("body sections have the wrong length"));
    }

    // Only growth is zero-filled: the rest and body sections below write every byte.
    out.truncate(logical_len);
    out.resize(logical_len, 0);
    let Scratch { a, rest, .. } = s;
    // `a` is overwritten whole by the body sections (their lengths add up to `body_len`).
    let dctx = match &mut s.dctx {
        Some(d) => d,
        None => {
            let d = zstd::bulk::Decompressor::new().map_err(|e| codec_err(format!("zstd init: {e}")))?;
            s.dctx.insert(d)
        }
    };

    // Rest.
    let rest_sec = &sections[0];
    let rest_bytes: &[u8] = match rest_sec.method {
        METHOD_STORED => &body[rest_sec.stored.clone()],
        _ => {
            rest.clear();
            rest.resize(rest_sec.raw_len, 0);
            unpack(dctx, &body[rest_sec.stored.clone()], &mut rest[..])?;
            &rest[..]
        }
    };
    let suffix_at = off + len;
    let tail = len - body_len;
    out[..off].copy_from_slice(&rest_bytes[..off]);
    out[off + body_len..suffix_at].copy_from_slice(&rest_bytes[off..off + tail]);
    out[suffix_at..].copy_from_slice(&rest_bytes[off + tail..]);

    // Body.
    let body_secs = &sections[1..];
    if mode == MODE_FILTERED {
        a.resize(body_len, 0);
        unpack_sections(dctx, body, body_secs, &mut a[..])?;
        filter_decode(&a[..], &plan, body_len / bps, &mut out[off..off + body_len]);
    } else {
        unpack_sections(dctx, body, body_secs, &mut out[off..off + body_len])?;
    }
    if out.len() != logical_len {
        return Err(codec_err("decoded length mismatch"));
    }
    match check {
        Some(want) if xxh3_64(out) != want => {
            Err(codec_err("decoded bytes differ from their stored checksum"))
        }
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

fn unpack_sections(
    dctx: &mut zstd::bulk::Decompressor<'static>,
    body: &[u8],
    sections: &[Section],
    dst: &mut [u8],
) -> Result<()> {
    let mut at = 0;
    for sec in sections {
        let d = &mut dst[at..at + sec.raw_len];
        let src = &body[sec.stored.clone()];
        match sec.method {
            METHOD_STORED => d.copy_from_slice(src),
            _ => unpack(dctx, src, d)?,
        }
        at += sec.raw_len;
    }
    Ok(())
}

fn unpack(dctx: &mut zstd::bulk::Decompressor<'static>, src: &[u8], dst: &mut [u8]) -> Result<()> {
    // zstd refuses to write past `dst`, so a frame claiming more than `raw_len` is an error.
    let want = dst.len();
    let n = dctx.decompress_to_buffer(src, dst).map_err(|e| codec_err(format!("zstd: {e}")))?;
    if n != want {
        return Err(codec_err(format!("section decompressed to {n} bytes, expected {want}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The filter: samples -> (subtract green) -> predictor residuals -> zigzag -> byte planes.
// It works one row at a time on small typed row buffers, so every stage after the first read
// of a row runs in L1; the loops are plain zips that LLVM vectorises (the only serial one is
// the prefix sum of the decoder: one add per sample).

trait Sample: Copy + Default {
    const BYTES: usize;
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn zigzag(self) -> Self;
    fn unzigzag(self) -> Self;
    fn from_le(b: &[u8]) -> Self;
    fn from_be(b: &[u8]) -> Self;
    fn write_le(self, b: &mut [u8]);
    fn write_be(self, b: &mut [u8]);
    /// Byte `k` (0 = least significant).
    fn byte(self, k: usize) -> u8;
    /// From bytes in plane order (least significant first); `b.len() == BYTES`.
    fn from_planes(b: &[u8]) -> Self;
}

macro_rules! sample {
    ($t:ty, $s:ty) => {
        impl Sample for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn wadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline(always)]
            fn zigzag(self) -> Self {
                (self << 1) ^ ((self as $s >> (<$t>::BITS - 1)) as $t)
            }
            #[inline(always)]
            fn unzigzag(self) -> Self {
                (self >> 1) ^ (0 as $t).wrapping_sub(self & 1)
            }
            #[inline(always)]
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("sample size"))
            }
            #[inline(always)]
            fn from_be(b: &[u8]) -> Self {
                <$t>::from_be_bytes(b.try_into().expect("sample size"))
            }
            #[inline(always)]
            fn write_le(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes())
            }
            #[inline(always)]
            fn write_be(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_be_bytes())
            }
            #[inline(always)]
            fn byte(self, k: usize) -> u8 {
                (self >> (8 * k)) as u8
            }
            #[inline(always)]
            fn from_planes(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("sample size"))
            }
        }
    };
}
sample!(u8, i8);
sample!(u16, i16);
sample!(u32, i32);

/// Row buffers of one sample width.
struct Rows<T> {
    prev: Vec<T>,
    cur: Vec<T>,
    res: Vec<T>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows { prev: Vec::new(), cur: Vec::new(), res: Vec::new() }
    }
}

static ROWS8: Pool<Rows<u8>> = Pool::new(KEEP_SETS);
static ROWS16: Pool<Rows<u16>> = Pool::new(KEEP_SETS);
static ROWS32: Pool<Rows<u32>> = Pool::new(KEEP_SETS);

fn with_rows<T, R>(pool: &'static Pool<Rows<T>>, f: impl FnOnce(&mut Rows<T>) -> R) -> R {
    pool.with(f, |rows| {
        let Rows { prev, cur, res } = rows;
        for v in [prev, cur, res] {
            if v.capacity() * std::mem::size_of::<T>() > KEEP_SCRATCH {
                *v = Vec::new();
            }
        }
    })
}

/// Filters `n` whole samples of `span` into byte planes in `planes` (`n * bps` bytes).
fn filter_encode(span: &[u8], plan: &Plan, n: usize, planes: &mut Vec<u8>) {
    // Every byte is written below: only growth is zero-filled.
    planes.resize(n * plan.bps, 0);
    let be = plan.flags & FLAG_BIG_ENDIAN != 0;
    if plan.flags & FLAG_SUBTRACT_GREEN == 0 && plan.bps <= 2 {
        let (pred, left, row) = filter_params(plan, n);
        let (lo, hi) = planes.split_at_mut(if plan.bps == 2 { n } else { n * plan.bps });
        match (plan.bps, be) {
            (1, _) => encode_fused::<u8, false>(span, n, left, row, pred, lo, hi),
            (_, false) => encode_fused::<u16, false>(span, n, left, row, pred, lo, hi),
            (_, true) => encode_fused::<u16, true>(span, n, left, row, pred, lo, hi),
        }
        return;
    }
    match plan.bps {
        1 => with_rows(&ROWS8, |rows| encode_typed::<u8>(span, plan, n, rows, planes)),
        2 => with_rows(&ROWS16, |rows| encode_typed::<u16>(span, plan, n, rows, planes)),
        _ => with_rows(&ROWS32, |rows| encode_typed::<u32>(span, plan, n, rows, planes)),
    }
}

/// Inverse of [`filter_encode`]: byte planes -> samples written into `out` (`n * bps` bytes).
fn filter_decode(planes: &[u8], plan: &Plan, n: usize, out: &mut [u8]) {
    let be = plan.flags & FLAG_BIG_ENDIAN != 0;
    if plan.flags & FLAG_SUBTRACT_GREEN == 0 && plan.bps <= 2 {
        let (pred, left, row) = filter_params(plan, n);
        let (lo, hi) = planes.split_at(if plan.bps == 2 { n } else { n * plan.bps });
        match (plan.bps, be) {
            (1, _) => unfilter::decode_planes::<u8, false>(lo, hi, left, row, pred, out),
            (_, false) => unfilter::decode_planes::<u16, false>(lo, hi, left, row, pred, out),
            (_, true) => unfilter::decode_planes::<u16, true>(lo, hi, left, row, pred, out),
        }
        return;
    }
    decode_rows(planes, plan, n, out)
}

/// [`filter_decode`] through typed row buffers: subtract-green, 4-byte samples (and, in the
/// tests, the reference the one-pass decoder is checked against).
fn decode_rows(planes: &[u8], plan: &Plan, n: usize, out: &mut [u8]) {
    match plan.bps {
        1 => with_rows(&ROWS8, |rows| decode_typed::<u8>(planes, plan, n, rows, out)),
        2 => with_rows(&ROWS16, |rows| decode_typed::<u16>(planes, plan, n, rows, out)),
        _ => with_rows(&ROWS32, |rows| decode_typed::<u32>(planes, plan, n, rows, out)),
    }
}

/// (predictor, left distance, row length) of a valid plan for `n` samples.
fn filter_params(plan: &Plan, n: usize) -> (Predictor, usize, usize) {
    let pred = Predictor::from_u8(plan.predictor).expect("plan validated");
    let (left, row) = plan.geometry(n);
    // The 1-D filter runs across row ends: one row.
    let row = if pred == Predictor::Left { n.max(1) } else { row };
    (pred, left, row)
}

/// One pass from the span's bytes to the residual planes, for 1- and 2-byte samples without
/// subtract-green: the row above is read in place, nothing is buffered. `lo` gets the low
/// bytes, `hi` the high ones (2-byte samples; empty for 1-byte ones).
fn encode_fused<T: Sample, const BE: bool>(
    span: &[u8],
    n: usize,
    left: usize,
    row: usize,
    pred: Predictor,
    lo: &mut [u8],
    hi: &mut [u8],
) {
    let mut start = 0;
    while start < n {
        let end = (start + row).min(n);
        let cur = &span[start * T::BYTES..end * T::BYTES];
        let up = (start > 0).then(|| &span[(start - row) * T::BYTES..(end - row) * T::BYTES]);
        let hi = if T::BYTES > 1 { &mut hi[start..end] } else { &mut [][..] };
        fused_row::<T, BE>(cur, up, left, pred, &mut lo[start..end], hi);
        start = end;
    }
}

#[inline(always)]
fn load<T: Sample, const BE: bool>(b: &[u8], i: usize) -> T {
    let s = &b[i * T::BYTES..(i + 1) * T::BYTES];
    if BE {
        T::from_be(s)
    } else {
        T::from_le(s)
    }
}

/// [`residuals`] + zigzag + plane split of one row, read straight from the span's bytes.
#[inline(always)]
fn fused_row<T: Sample, const BE: bool>(
    cur: &[u8],
    up: Option<&[u8]>,
    left: usize,
    pred: Predictor,
    lo: &mut [u8],
    hi: &mut [u8],
) {
    let len = lo.len();
    assert!(cur.len() == len * T::BYTES && (T::BYTES == 1 || hi.len() == len));
    let k = left.min(len);
    let mut put = |i: usize, r: T| {
        let z = r.zigzag();
        lo[i] = z.byte(0);
        if T::BYTES > 1 {
            hi[i] = z.byte(1);
        }
    };
    match up {
        None => {
            for i in 0..k {
                put(i, load::<T, BE>(cur, i));
            }
            for i in k..len {
                put(i, load::<T, BE>(cur, i).wsub(load::<T, BE>(cur, i - k)));
            }
        }
        Some(up) => {
            assert!(up.len() == cur.len());
            for i in 0..k {
                put(i, load::<T, BE>(cur, i).wsub(load::<T, BE>(up, i)));
            }
            if pred == Predictor::Up {
                for i in k..len {
                    put(i, load::<T, BE>(cur, i).wsub(load::<T, BE>(up, i)));
                }
            } else {
                // Gradient: v - (a + u - c) == (v - u) - (a - c).
                for i in k..len {
                    let (v, u) = (load::<T, BE>(cur, i), load::<T, BE>(up, i));
                    let (a, c) = (load::<T, BE>(cur, i - k), load::<T, BE>(up, i - k));
                    put(i, v.wsub(u).wsub(a.wsub(c)));
                }
            }
        }
    }
}

fn encode_typed<T: Sample>(span: &[u8], plan: &Plan, n: usize, rows: &mut Rows<T>, planes: &mut [u8]) {
    let be = plan.flags & FLAG_BIG_ENDIAN != 0;
    let green = plan.flags & FLAG_SUBTRACT_GREEN != 0;
    let (pred, left, row) = filter_params(plan, n);
    let Rows { prev, cur, res } = rows;
    let mut start = 0;
    while start < n {
        let end = (start + row).min(n);
        let bytes = &span[start * T::BYTES..end * T::BYTES];
        cur.clear();
        if be {
            cur.extend(bytes.chunks_exact(T::BYTES).map(T::from_be));
        } else {
            cur.extend(bytes.chunks_exact(T::BYTES).map(T::from_le));
        }
        if green {
            for px in cur.chunks_exact_mut(3) {
                let g = px[1];
                px[0] = px[0].wsub(g);
                px[2] = px[2].wsub(g);
            }
        }
        res.clear();
        res.resize(cur.len(), T::default());
        let up = if start == 0 { None } else { Some(&prev[..cur.len()]) };
        residuals(cur, up, res, left, pred);
        match T::BYTES {
            1 => {
                for (p, &v) in planes[start..end].iter_mut().zip(res.iter()) {
                    *p = v.zigzag().byte(0);
                }
            }
            _ => {
                for v in res.iter_mut() {
                    *v = v.zigzag();
                }
                for k in 0..T::BYTES {
                    let plane = &mut planes[k * n + start..k * n + end];
                    for (p, &v) in plane.iter_mut().zip(res.iter()) {
                        *p = v.byte(k);
                    }
                }
            }
        }
        std::mem::swap(prev, cur);
        start = end;
    }
}

fn decode_typed<T: Sample>(planes: &[u8], plan: &Plan, n: usize, rows: &mut Rows<T>, out: &mut [u8]) {
    let be = plan.flags & FLAG_BIG_ENDIAN != 0;
    let green = plan.flags & FLAG_SUBTRACT_GREEN != 0;
    let (pred, left, row) = filter_params(plan, n);
    let Rows { prev, cur, .. } = rows;
    let mut start = 0;
    while start < n {
        let end = (start + row).min(n);
        let len = end - start;
        cur.clear();
        match T::BYTES {
            1 => cur.extend(planes[start..end].iter().map(|&b| T::from_planes(&[b]).unzigzag())),
            2 => {
                let lo = &planes[start..end];
                let hi = &planes[n + start..n + end];
                cur.extend(lo.iter().zip(hi).map(|(&l, &h)| T::from_planes(&[l, h]).unzigzag()));
            }
            _ => {
                let p0 = &planes[start..end];
                let p1 = &planes[n + start..n + end];
                let p2 = &planes[2 * n + start..2 * n + end];
                let p3 = &planes[3 * n + start..3 * n + end];
                cur.extend(
                    p0.iter()
                        .zip(p1)
                        .zip(p2)
                        .zip(p3)
                        .map(|(((&a, &b), &c), &d)| T::from_planes(&[a, b, c, d]).unzigzag()),
                );
            }
        }
        let up = if start == 0 { None } else { Some(&prev[..len]) };
        reconstruct(cur, up, left, pred);
        let dst = &mut out[start * T::BYTES..end * T::BYTES];
        match (be, green) {
            (false, false) => write_row(cur, dst, T::write_le),
            (true, false) => write_row(cur, dst, T::write_be),
            (false, true) => write_row_green(cur, dst, T::write_le),
            (true, true) => write_row_green(cur, dst, T::write_be),
        }
        std::mem::swap(prev, cur);
        start = end;
    }
}

#[inline(always)]
fn write_row<T: Sample>(cur: &[T], dst: &mut [u8], write: impl Fn(T, &mut [u8])) {
    for (o, &v) in dst.chunks_exact_mut(T::BYTES).zip(cur.iter()) {
        write(v, o);
    }
}

/// Writes a row adding green back to red and blue (whole pixels; a partial one as is).
#[inline(always)]
fn write_row_green<T: Sample>(cur: &[T], dst: &mut [u8], write: impl Fn(T, &mut [u8])) {
    let mut px_out = dst.chunks_exact_mut(3 * T::BYTES);
    let mut px_in = cur.chunks_exact(3);
    for (o, px) in (&mut px_out).zip(&mut px_in) {
        let g = px[1];
        let (o0, o12) = o.split_at_mut(T::BYTES);
        let (o1, o2) = o12.split_at_mut(T::BYTES);
        write(px[0].wadd(g), o0);
        write(g, o1);
        write(px[2].wadd(g), o2);
    }
    for (o, &v) in px_out.into_remainder().chunks_exact_mut(T::BYTES).zip(px_in.remainder()) {
        write(v, o);
    }
}

/// Residuals of one row `cur` into `res`; `up` is the row above (same length), `None` on the
/// first row. `left` is the distance to the left neighbour (samples per pixel). The first
/// pixel of a row is predicted from above, or kept as is on the first row.
fn residuals<T: Sample>(cur: &[T], up: Option<&[T]>, res: &mut [T], left: usize, pred: Predictor) {
    let k = left.min(cur.len());
    match up {
        None => {
            res[..k].copy_from_slice(&cur[..k]);
            for ((d, &v), &a) in res[k..].iter_mut().zip(&cur[k..]).zip(cur) {
                *d = v.wsub(a);
            }
        }
        Some(up) => {
            for ((d, &v), &u) in res[..k].iter_mut().zip(&cur[..k]).zip(up) {
                *d = v.wsub(u);
            }
            let it = res[k..].iter_mut().zip(&cur[k..]).zip(cur).zip(&up[k..]).zip(up);
            if pred == Predictor::Up {
                for ((((d, &v), _), &u), _) in it {
                    *d = v.wsub(u);
                }
            } else {
                // Gradient: v - (a + u - c) == (v - u) - (a - c).
                for ((((d, &v), &a), &u), &c) in it {
                    *d = v.wsub(u).wsub(a.wsub(c));
                }
            }
        }
    }
}

/// Inverse of [`residuals`], in place: `cur` holds the residuals on entry.
fn reconstruct<T: Sample>(cur: &mut [T], up: Option<&[T]>, left: usize, pred: Predictor) {
    match up {
        None => prefix_sum(cur, left),
        Some(up) => {
            // Gradient: v - u is the running sum of the residuals (serial: one add per sample),
            // then add the row above (vectorised). Up: only the latter.
            if pred != Predictor::Up {
                prefix_sum(cur, left);
            }
            for (v, &u) in cur.iter_mut().zip(up) {
                *v = v.wadd(u);
            }
        }
    }
}

/// In-place running sum with distance `left` (one independent sum per channel).
fn prefix_sum<T: Sample>(x: &mut [T], left: usize) {
    match left {
        1 => {
            let mut acc = T::default();
            for v in x.iter_mut() {
                acc = acc.wadd(*v);
                *v = acc;
            }
        }
        3 => {
            let mut acc = [T::default(); 3];
            let mut it = x.chunks_exact_mut(3);
            for px in &mut it {
                for (a, v) in acc.iter_mut().zip(px.iter_mut()) {
                    *a = a.wadd(*v);
                    *v = *a;
                }
            }
            for (a, v) in acc.iter().zip(it.into_remainder()) {
                *v = a.wadd(*v);
            }
        }
        _ => {
            for i in left..x.len() {
                let p = x[i - left];
                x[i] = x[i].wadd(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::{recrc, Rng};

    /// Image-like samples: a smooth field, an edge, a bright disc and a little noise, as
    /// `bps`-byte samples in the given order and planar/interleaved layout.
    fn image(seed: u64, cols: usize, rows: usize, spp: usize, bps: usize, be: bool, signed: bool) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        let max = match bps {
            1 => 255i64,
            2 => 4095,
            _ => 1 << 20,
        };
        let mut out = Vec::with_capacity(cols * rows * spp * bps);
        for y in 0..rows {
            for x in 0..cols {
                for c in 0..spp {
                    let dx = x as i64 - cols as i64 / 2;
                    let dy = y as i64 - rows as i64 / 2;
                    let mut v = (x as i64 * 3 + y as i64 * 2 + c as i64 * 17) % (max / 2);
                    if x > cols / 3 {
                        v += max / 4;
                    }
                    if dx * dx + dy * dy < (cols as i64 * cols as i64) / 16 {
                        v = max - v / 4;
                    }
                    v += rng.below(7) as i64 - 3;
                    if signed {
                        v -= max / 2;
                    }
                    let v = v as u64;
                    let b = v.to_le_bytes();
                    if be {
                        out.extend(b[..bps].iter().rev());
                    } else {
                        out.extend_from_slice(&b[..bps]);
                    }
                }
            }
        }
        out
    }

    /// Makes `<ts>\0 <header> <span> <trailer>` and its layout.
    fn object(header: usize, span: &[u8], trailer: usize, layout: PixelLayout) -> (Vec<u8>, PixelLayout) {
        let mut v = b"1.2.840.10008.1.2.1\0".to_vec();
        let mut rng = Rng(header as u64 * 31 + trailer as u64 + 7);
        while v.len() < header {
            v.extend_from_slice(b"\x08\x00\x60\x00CS\x02\x00CT");
            v.push(rng.next() as u8 & 7);
        }
        v.truncate(header.max(20));
        let offset = v.len();
        v.extend_from_slice(span);
        for i in 0..trailer {
            v.push((i % 7) as u8 ^ rng.next() as u8 & 1);
        }
        (v, PixelLayout { offset, length: span.len(), ..layout })
    }

    fn roundtrip(logical: &[u8], layout: Option<&PixelLayout>) -> (Codec, Vec<u8>) {
        for level in [DEFAULT_HOT_LEVEL, 3] {
            let (codec, stored) = encode_hot(logical, layout, level).unwrap();
            let back = decode(codec, &stored, logical.len()).unwrap();
            assert!(back == logical, "round trip differs for {layout:?} level {level}");
        }
        let mut opts = HotOptions::with_level(DEFAULT_HOT_LEVEL);
        opts.split_planes = true;
        opts.predictor_wide = Some(Predictor::Left);
        let (codec, stored) = encode_hot_with(logical, layout, &opts).unwrap();
        assert_eq!(decode(codec, &stored, logical.len()).unwrap(), logical);
        opts.predictor_wide = Some(Predictor::Up);
        opts.predictor_8 = Some(Predictor::Up);
        let (codec, stored) = encode_hot_with(logical, layout, &opts).unwrap();
        assert_eq!(decode(codec, &stored, logical.len()).unwrap(), logical);
        encode_hot(logical, layout, DEFAULT_HOT_LEVEL).unwrap()
    }

    fn native(bps: u8, be: bool, cols: u32, spp: u16, planar: bool) -> PixelLayout {
        PixelLayout::native(0, 0, bps, be, cols, spp, planar)
    }

    #[test]
    fn codec_ids() {
        assert_eq!(Codec::from_u8(0).unwrap(), Codec::Raw);
        assert_eq!(Codec::from_u8(1).unwrap(), Codec::Hot);
        assert_eq!(Codec::from_u8(2).unwrap(), Codec::Cold);
        assert!(matches!(Codec::from_u8(3), Err(Error::Codec { .. })));
    }

    #[test]
    fn sixteen_bit_layouts_roundtrip_and_compress() {
        for (be, signed) in [(false, false), (false, true), (true, false), (true, true)] {
            let span = image(3, 64, 40, 1, 2, be, signed);
            let (obj, l) = object(300, &span, 0, native(2, be, 64, 1, false));
            let (codec, stored) = roundtrip(&obj, Some(&l));
            assert_eq!(codec, Codec::Hot);
            // The filter must beat plain zstd on image-like data.
            let (_, plain) = encode_hot(&obj, None, DEFAULT_HOT_LEVEL).unwrap();
            assert!(stored.len() < plain.len(), "filtered {} vs plain {}", stored.len(), plain.len());
        }
    }

    #[test]
    fn eight_bit_colour_and_wide_layouts_roundtrip() {
        let cases: Vec<(Vec<u8>, PixelLayout)> = vec![
            (image(1, 50, 30, 1, 1, false, false), native(1, false, 50, 1, false)),
            (image(2, 40, 20, 3, 1, false, false), native(1, false, 40, 3, false)),
            (image(3, 40, 20, 3, 1, false, false), native(1, false, 40, 3, true)),
            (image(4, 33, 21, 3, 2, false, false), native(2, false, 33, 3, false)),
            (image(5, 33, 21, 3, 2, true, false), native(2, true, 33, 3, true)),
            (image(6, 20, 20, 1, 4, false, true), native(4, false, 20, 1, false)),
            (image(7, 20, 20, 1, 4, true, false), native(4, true, 20, 1, false)),
            (image(8, 16, 16, 4, 1, false, false), native(1, false, 16, 4, false)),
        ];
        for (span, layout) in cases {
            let (obj, l) = object(200, &span, 40, layout);
            let (codec, _) = roundtrip(&obj, Some(&l));
            assert_eq!(codec, Codec::Hot, "{l:?}");
        }
    }

    #[test]
    fn odd_geometries_roundtrip() {
        let span = image(9, 37, 23, 1, 2, false, false);
        for cut in [0, 1, 2, 3, 255, 256, 257, span.len() - 1] {
            let s = &span[..span.len() - cut];
            for (cols, spp) in
                [(37, 1), (0, 1), (5, 1), (36, 1), (38, 1), (100_000, 1), (u32::MAX, 3), (37, 0)]
            {
                for trailer in [0, 13] {
                    let (obj, l) = object(100, s, trailer, native(2, false, cols, spp, false));
                    roundtrip(&obj, Some(&l));
                    let (obj, l) = object(100, s, trailer, native(1, false, cols, spp, true));
                    roundtrip(&obj, Some(&l));
                }
            }
        }
        // Span at the very start, unusual sample sizes, empty spans, out-of-bounds layouts.
        let (mut obj, _) = object(20, &span, 9, PixelLayout::default());
        let n = obj.len();
        for l in [
            native(2, false, 37, 1, false),
            PixelLayout { offset: 0, length: n, ..native(2, false, 37, 1, false) },
            PixelLayout { offset: 5, length: n - 5, ..native(2, true, 3, 1, false) },
            PixelLayout { offset: 20, length: span.len(), ..native(3, false, 37, 1, false) },
            PixelLayout { offset: 20, length: span.len(), ..native(0, false, 37, 1, false) },
            PixelLayout { offset: n, length: 0, ..native(2, false, 37, 1, false) },
            PixelLayout { offset: n, length: 1, ..native(2, false, 37, 1, false) },
            PixelLayout { offset: usize::MAX, length: 2, ..native(2, false, 37, 1, false) },
            PixelLayout::verbatim(20, 0),
            PixelLayout::verbatim(20, span.len()),
            PixelLayout::verbatim(0, n),
        ] {
            roundtrip(&obj, Some(&l));
        }
        // Tiny objects.
        for len in 0..40 {
            obj.truncate(len);
            roundtrip(&obj, None);
            roundtrip(
                &obj,
                Some(&PixelLayout { offset: len / 2, length: len / 3, ..native(2, false, 3, 1, false) }),
            );
        }
    }

    #[test]
    fn random_zero_and_verbatim_data() {
        let mut rng = Rng(42);
        // Incompressible: kept raw.
        let random = rng.bytes(50_000);
        let (obj, l) = object(400, &random, 100, native(2, false, 100, 1, false));
        let (codec, stored) = roundtrip(&obj, Some(&l));
        assert_eq!(codec, Codec::Raw);
        assert_eq!(stored, obj);
        // All zero: tiny.
        let zeros = vec![0u8; 100_000];
        let (codec, stored) = roundtrip(
            &zeros,
            Some(&PixelLayout { offset: 10, length: 99_000, ..native(2, false, 300, 1, false) }),
        );
        assert_eq!(codec, Codec::Hot);
        assert!(stored.len() < 200, "{}", stored.len());
        // A compressible header around an incompressible (encapsulated) span kept verbatim.
        let (obj, _) = object(20_000, &random, 5_000, PixelLayout::default());
        let l = PixelLayout::verbatim(20_000, random.len());
        let (codec, stored) = roundtrip(&obj, Some(&l));
        assert_eq!(codec, Codec::Hot);
        assert!(stored.len() < random.len() + 8_000, "{}", stored.len());
        assert!(stored.windows(random.len()).any(|w| w == random), "span not stored verbatim");
    }

    /// The fused one-pass filter (1/2-byte samples) writes exactly what the row-buffered one
    /// (the reference, also used for 4-byte samples and subtract-green) writes.
    #[test]
    fn fused_filter_matches_row_filter() {
        for bps in [1usize, 2] {
            for be in [false, true] {
                let span = image(13, 37, 23, 1, bps, be, bps == 2);
                for pred in [Predictor::Left, Predictor::Up, Predictor::Gradient] {
                    for (cols, spp) in
                        [(37, 1), (0, 1), (5, 1), (36, 1), (38, 1), (100_000, 1), (12, 3), (9, 4)]
                    {
                        for cut in [0, bps, 7 * bps] {
                            let s = &span[..span.len() - cut];
                            let n = s.len() / bps;
                            let flags = if be { FLAG_BIG_ENDIAN } else { 0 };
                            let plan = Plan {
                                mode: MODE_FILTERED,
                                predictor: pred as u8,
                                bps,
                                flags,
                                spp,
                                columns: cols,
                                off: 0,
                                len: s.len(),
                            };
                            let mut fused = vec![0xAA; 3];
                            filter_encode(s, &plan, n, &mut fused);
                            let mut reference = vec![0u8; n * bps];
                            if bps == 1 {
                                with_rows(&ROWS8, |r| encode_typed::<u8>(s, &plan, n, r, &mut reference));
                            } else {
                                with_rows(&ROWS16, |r| encode_typed::<u16>(s, &plan, n, r, &mut reference));
                            }
                            assert!(
                                fused == reference,
                                "bps {bps} be {be} {pred:?} cols {cols} spp {spp} cut {cut}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The body context relies on zstd's literal compression mode (an experimental parameter
    /// set by number): with it, a search step still Huffman-codes the literals. Skewed random
    /// bytes (4 bits of entropy, no matches) only shrink through Huffman.
    #[test]
    fn literal_compression_stays_on() {
        let mut rng = Rng(5);
        let data: Vec<u8> = (0..200_000).map(|_| (rng.next() % 16) as u8).collect();
        let mut z = Zc::new((DEFAULT_HOT_LEVEL, HOT_BODY_ZSTD_PARAMS)).unwrap();
        let mut out = Vec::new();
        let n = z.compress_into(&data, &mut out).unwrap();
        assert!(n < data.len() * 6 / 10, "{n} bytes: literals not Huffman-coded");
        assert_eq!(zstd::bulk::decompress(&out, data.len()).unwrap(), data);
        // A plane of such noise takes the accelerated context; an LZ-rich one does not.
        let mut plain = Zc::new((DEFAULT_HOT_LEVEL, HOT_ZSTD_PARAMS)).unwrap();
        let mut buf = Vec::new();
        assert!(accel_pays(&data, &mut plain, &mut z, &mut buf).unwrap());
        assert!(!accel_pays(&data[..3 * ACCEL_PROBE], &mut plain, &mut z, &mut buf).unwrap());
    }

    fn sample_stored() -> (Vec<u8>, Vec<u8>) {
        let span = image(11, 24, 12, 1, 2, false, true);
        let (obj, l) = object(120, &span, 30, native(2, false, 24, 1, false));
        let (codec, stored) = encode_hot(&obj, Some(&l), DEFAULT_HOT_LEVEL).unwrap();
        assert_eq!(codec, Codec::Hot);
        (obj, stored)
    }

    #[test]
    fn version_2_checks_the_decoded_bytes() {
        let (obj, stored) = sample_stored();
        assert_eq!(stored[3], VERSION);
        let mut out = Vec::new();
        assert!(decode_checked_into(Codec::Hot, &stored, obj.len(), &mut out, StoredCrc::Unchecked).unwrap());
        assert_eq!(out, obj);
        // The stored checksum is what the encoder took from the logical bytes.
        let at = stored.len() - CRC_LEN - CHECK_LEN;
        assert_eq!(stored[at..at + CHECK_LEN], xxh3_64(&obj).to_le_bytes());
        // A decode that gives other bytes than were encoded (here: the checksum of other bytes,
        // the stream otherwise intact and its CRC right) is an error, not a silent success.
        for bit in [0, 9, 63] {
            let mut bad = stored.clone();
            bad[at + bit / 8] ^= 1 << (bit % 8);
            let r = decode_checked_into(Codec::Hot, &recrc(bad), obj.len(), &mut out, StoredCrc::Unchecked);
            assert!(
                matches!(r, Err(Error::Codec { ref reason }) if reason.contains("stored checksum")),
                "{r:?}"
            );
        }
        assert!(!decode_checked_into(Codec::Raw, &obj, obj.len(), &mut out, StoredCrc::Unchecked).unwrap());
    }

    /// `StoredCrc::RecordChecked` skips the codec's CRC and nothing else: a stream whose only fault
    /// is its CRC decodes, and any other corruption is still an error or (bits the decoder
    /// never reads) decodes to the right bytes, never to wrong bytes reported as checked.
    #[test]
    fn record_checked_bytes_skip_only_the_crc() {
        let span = image(5, 64, 48, 1, 2, false, true);
        let (obj, l) = object(300, &span, 40, native(2, false, 64, 1, false));
        let (_, hot) = encode_hot(&obj, Some(&l), DEFAULT_HOT_LEVEL).unwrap();
        let cold = cold::encode_cold_only(&obj, &l).unwrap();
        let mut out = Vec::new();
        for (codec, stored) in [(Codec::Hot, &hot), (Codec::Cold, &cold)] {
            let mut bad_crc = stored.clone();
            *bad_crc.last_mut().unwrap() ^= 0x10;
            let r = decode_checked_into(codec, &bad_crc, obj.len(), &mut out, StoredCrc::Unchecked);
            assert!(
                matches!(r, Err(Error::Codec { ref reason }) if reason.contains("checksum mismatch")),
                "{r:?}"
            );
            assert!(
                decode_checked_into(codec, &bad_crc, obj.len(), &mut out, StoredCrc::RecordChecked).unwrap()
            );
            assert_eq!(out, obj, "{codec:?}");
            // Every byte before the CRC flipped in turn, the CRC left stale (what a record CRC
            // would have caught first).
            for i in 0..stored.len() - CRC_LEN {
                let mut bad = stored.clone();
                bad[i] ^= 0x5a;
                assert!(decode(codec, &bad, obj.len()).is_err(), "{codec:?}: byte {i} accepted");
                let r = decode_checked_into(codec, &bad, obj.len(), &mut out, StoredCrc::RecordChecked);
                assert!(r.is_err() || (r.unwrap() && out == obj), "{codec:?}: byte {i} decoded wrong");
            }
        }
    }

    #[test]
    fn version_1_streams_still_decode_unchecked() {
        for (obj, stored) in [sample_stored(), {
            let obj = b"1.2.840.10008.1.2.1\0".repeat(300);
            let (codec, stored) = encode_hot(&obj, None, DEFAULT_HOT_LEVEL).unwrap();
            assert_eq!(codec, Codec::Hot);
            (obj, stored)
        }] {
            // Version 1 is version 2 without the checksum.
            let mut v1 = stored[..stored.len() - CRC_LEN - CHECK_LEN].to_vec();
            v1[3] = VERSION_1;
            v1.extend_from_slice(&[0; CRC_LEN]);
            let v1 = recrc(v1);
            let mut out = Vec::new();
            assert!(!decode_checked_into(Codec::Hot, &v1, obj.len(), &mut out, StoredCrc::Unchecked).unwrap());
            assert_eq!(out, obj);
            // A version 2 header on it (no checksum there) does not decode.
            let mut v2 = v1.clone();
            v2[3] = VERSION;
            assert!(decode(Codec::Hot, &recrc(v2), obj.len()).is_err());
            let mut v3 = v1;
            v3[3] = 3;
            assert!(decode(Codec::Hot, &recrc(v3), obj.len()).is_err());
        }
    }

    #[test]
    fn truncation_and_length_mismatch_are_errors() {
        let (obj, stored) = sample_stored();
        for cut in 0..stored.len() {
            let r = decode(Codec::Hot, &stored[..cut], obj.len());
            assert!(matches!(r, Err(Error::Codec { .. })), "prefix {cut} accepted");
        }
        let mut longer = stored.clone();
        longer.push(0);
        assert!(decode(Codec::Hot, &longer, obj.len()).is_err());
        assert!(decode(Codec::Hot, &stored, obj.len() + 1).is_err());
        assert!(decode(Codec::Hot, &stored, obj.len() - 1).is_err());
        assert!(decode(Codec::Raw, &obj, obj.len() + 1).is_err());
    }

    #[test]
    fn bit_flips_are_errors() {
        let (obj, stored) = sample_stored();
        let mut rng = Rng(7);
        for _ in 0..3000 {
            let mut bad = stored.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(bad.len());
                bad[i] ^= 1 << rng.below(8);
            }
            assert!(matches!(decode(Codec::Hot, &bad, obj.len()), Err(Error::Codec { .. })));
        }
    }

    /// The one-pass decoder of 1/2-byte samples (both its compilations) gives what the row-buffer
    /// decoder gives, on arbitrary planes: every predictor, sample distance, row length (shorter
    /// than a scan block, not a multiple of one, a single row) and byte order.
    #[test]
    fn one_pass_decoder_matches_row_decoder() {
        let mut rng = Rng(5);
        for bps in [1usize, 2] {
            for be in [false, true] {
                for pred in [Predictor::Gradient, Predictor::Up, Predictor::Left] {
                    for (cols, spp, n) in [
                        (512, 1, 512 * 7),
                        (37, 1, 37 * 9 + 5),
                        (29, 1, 29 * 5 + 3),
                        (47, 1, 47 * 4),
                        (5, 1, 40),
                        (16, 1, 64),
                        (1, 1, 9),
                        (0, 1, 1000),
                        (7, 3, 7 * 3 * 6),
                        (9, 2, 9 * 2 * 5 + 1),
                        (33, 1, 17),
                        (100, 1, 0),
                    ] {
                        let planes: Vec<u8> = (0..n * bps).map(|_| rng.below(256) as u8).collect();
                        let flags = if be && bps > 1 { FLAG_BIG_ENDIAN } else { 0 };
                        let plan = Plan {
                            mode: MODE_FILTERED,
                            predictor: pred as u8,
                            bps,
                            flags,
                            spp,
                            columns: cols,
                            off: 0,
                            len: n * bps,
                        };
                        let mut want = vec![0u8; n * bps];
                        decode_rows(&planes, &plan, n, &mut want);
                        let mut got = vec![0xAAu8; n * bps];
                        filter_decode(&planes, &plan, n, &mut got);
                        assert_eq!(got, want, "bps {bps} be {be} {pred:?} cols {cols} spp {spp} n {n}");
                        let (p, left, row) = filter_params(&plan, n);
                        let (lo, hi) = planes.split_at(if bps == 2 { n } else { n * bps });
                        let mut portable = vec![0x55u8; n * bps];
                        match (bps, be) {
                            (1, _) => {
                                unfilter::decode_planes_body::<u8, false>(lo, hi, left, row, p, &mut portable)
                            }
                            (_, false) => unfilter::decode_planes_body::<u16, false>(
                                lo,
                                hi,
                                left,
                                row,
                                p,
                                &mut portable,
                            ),
                            (_, true) => {
                                unfilter::decode_planes_body::<u16, true>(lo, hi, left, row, p, &mut portable)
                            }
                        }
                        assert_eq!(
                            portable, want,
                            "portable: bps {bps} be {be} {pred:?} cols {cols} spp {spp}"
                        );
                    }
                }
            }
        }
    }

    /// Corruption that the CRC does not see (its value fixed up): every field is still validated,
    /// nothing panics, and whatever decodes has the right length.
    #[test]
    fn corrupt_payload_with_valid_crc_never_panics() {
        let mut rng = Rng(99);
        let mut inputs = vec![sample_stored().1];
        let zeros = vec![0u8; 3000];
        inputs.push(encode_hot(&zeros, Some(&PixelLayout::verbatim(100, 50)), 1).unwrap().1);
        inputs.push(encode_hot(&zeros, None, 1).unwrap().1);
        let span = image(12, 8, 8, 3, 1, false, false);
        let (obj, l) = object(50, &span, 3, native(1, false, 8, 3, false));
        inputs.push(encode_hot(&obj, Some(&l), 1).unwrap().1);
        for stored in &inputs {
            let body = stored.len() - CRC_LEN;
            for _ in 0..1500 {
                let mut bad = stored.clone();
                // Mostly header bytes, sometimes anywhere.
                let range = if rng.below(3) == 0 { body } else { body.min(FIXED_HEADER + 3 * SECTION_ENTRY) };
                for _ in 0..=rng.below(2) {
                    let i = rng.below(range);
                    bad[i] = if rng.below(2) == 0 { rng.next() as u8 } else { bad[i] ^ (1 << rng.below(8)) };
                }
                let crc = crc32fast::hash(&bad[..body]);
                bad[body..].copy_from_slice(&crc.to_le_bytes());
                for len in [3000, obj.len(), 50] {
                    if let Ok(out) = decode(Codec::Hot, &bad, len) {
                        assert_eq!(out.len(), len);
                    }
                }
            }
        }
    }
}
