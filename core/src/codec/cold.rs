//! The cold codec: dense lossless coding of native pixel data, for the cold tier.
//!
//! Native (uncompressed) 8- and 16-bit samples are coded by a context-modelling image coder
//! written here (no C library): prediction by MED (LOCO-I's median edge detector), residuals
//! as tokens coded by rANS with static per-context tables (a two-pass encoder) in contexts of
//! the residuals and gradients of the rows above, their low bits raw. The bytes around the
//! pixel span (header, trailing elements) are compressed by zstd. Everything the model does
//! not cover (encapsulated pixel data, 1- or 32-bit samples, more than four samples per pixel,
//! no pixel data) goes to the hot codec: [`encode_cold`] then returns [`Codec::Hot`] (or
//! [`Codec::Raw`]), and [`cold_support`] says why, so callers can count the fallbacks.
//! [`encode_cold`] also keeps the hot codec's output when it is the smaller one
//! (lossy-decompressed or synthetic images whose residuals repeat, palette indices): the cold
//! tier never stores more than the warm one would.
//!
//! Measured on the codec benchmark's corpus (`cargo run --release --example cold_ratio`):
//! about 1.69x the stored size of Orthanc's zlib-6 in total and 1.13x the hot codec's, at
//! ~90 MB/s per core to encode and ~230-265 MB/s to decode in version 5 (~240-260 MB/s on the
//! tier bench's CT; `--example cold_decode` times the decode alone), ~1.26-1.35x that in
//! version 6 (below). Version 1 (an error-weighted blend of
//! five predictors, adaptive binary arithmetic coding; decoded, no longer written) stored ~2%
//! less in total, up to ~12% less on some mid-size images, and decoded at ~38 MB/s: the cold
//! tier's retrieval is bound by this decode, so version 2 traded that for speed. Version 3 is
//! version 2's model with four interleaved rANS states instead of two; both are decoded by one
//! loop that reads a sample's token, raw bits and MED value together, compiled a second time
//! for x86-64-v3 CPUs (AVX2, BMI2) and picked at run time. Version 4 is version
//! 3 with the XXH3-64 of the logical bytes at its end, for the reason of the hot codec's
//! version 2 (see [`super`]): a read checks its decode against it (~30 µs for a CT slice)
//! instead of hashing it with BLAKE3 (~150 µs), ~7 % of a cold C-GET's server CPU. Version 5
//! is version 4 with 32 rANS states: the decoder takes a row in passes (tokens, raw bits, MED),
//! and on x86-64-v3 decodes the tokens 8 states to a vector (one gather a step), 4 vectors side
//! by side; with 4 states a vector's steps wait on each other. ~1.15-1.2x version 4's decode on
//! CT, 128 bytes more per object (bench/RESULTS.md, "Cold decode in passes"). Version 6
//! (written today) is version 5 with each row cut into 8 segments whose first samples are
//! predicted from above, as a row's first: version 5's MED pass was one chain along the row
//! (each prediction waits on the value before it, ~4-5 cycles a sample, ~20 % of the decode);
//! version 6's 8 chains are independent, and on x86-64-v3 one AVX2 vector steps them all (lane
//! `k` segment `k`; 8 x 8 transposes bring the segments' residuals and rows above into that
//! order and take the values back). On 50 CT slices of the tier bench (medians of 8
//! interleaved runs on a shared 2-core EPYC): version 4 200, version 5 244, version 6 308 MB/s
//! per core (1.26x version 5; with 8, 4 or 2 scalar chains instead of the vector 257, 282 and
//! 237; again in 6 runs: 215, 258, 349), 119 then 98 instructions a pixel (callgrind); the
//! bench set's stored total 0.07 % more (the whole corpus 0.04 %)
//! (1.689x zlib-6 for 1.690x; the first sample of a segment costs about what a row's first
//! does, 7 more of those a row).
//! The decoder was then made ~1.14x faster on that CT without a format change (a grey row's
//! ranks to bytes in one pass, the residual magnitudes the contexts need taken from the
//! residuals instead of predicted again, a group's 4 state vectors kept in registers): 497 ->
//! 565 MB/s per core, medians of 10 interleaved runs of `--example cold_decode`; ~1.04x on
//! pydicom's and pydicom-data's images (more colour and fewer compacted channels).
//!
//! # Stored format of `Codec::Cold`, versions 2 to 6
//!
//! All integers are little-endian.
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `b"DVC"` then the format version `2` to `6` |
//! | 1 | flags: bit 0 big-endian samples, bit 1 signed (two's complement) samples, bit 2 colour transform, bit 3 swapped pairs |
//! | 1 | bytes per sample: 1 or 2 |
//! | 1 | channels: samples per pixel as coded, 1..=4 (planar colour is coded as 1 channel) |
//! | 1 | reserved, 0 |
//! | 4 | columns: pixels per row, 1..=65536, at most the number of pixels (when there are any) |
//! | 8 | logical length |
//! | 8 | span offset |
//! | 8 | span length |
//! | 1 | rest method: 0 stored, 1 zstd |
//! | 8 | rest raw length |
//! | 8 | rest stored length |
//! | 1 | table section method: 0 stored, 1 zstd |
//! | 8 | table section raw length (0 if and only if there are no pixels) |
//! | 8 | table section stored length |
//! | 8 | rANS stream length |
//! | 8 | raw-bit stream length |
//! | 12 × channels | per channel: lowest and highest value (i32 each), number of distinct values `m` (u32; 0: not compacted) |
//! | ... | per compacted channel, in channel order: `m - 1` LEB128 gaps between its sorted distinct values, minus 1 |
//! | ... | rest, table section, rANS stream, raw-bit stream, back to back |
//! | 8 | versions 4 to 6 only: XXH3-64 of the logical bytes |
//! | 4 | CRC-32 of every byte before it |
//!
//! Without pixels the three pixel streams are empty.
//!
//! The span's body is its first `span_len - span_len % (bps * channels)` bytes: whole pixels,
//! `n = body / (bps * channels)` of them, in rows of `columns` pixels (the last row may be
//! shorter; frames follow each other as more rows). The rest is `logical[..off]`, the span
//! bytes after the body (a trailing odd byte, a partial pixel), then `logical[off + span_len..]`.
//!
//! With the swapped-pairs flag (8-bit samples only, even body length) the body's bytes are
//! coded with each pair swapped: 8-bit samples in Explicit VR Big Endian OW words.
//! Samples are read in their byte order, as two's complement when the signed flag is set (the
//! encoder picks whichever reading gives the narrower range), so any bit pattern, bits above
//! Bits Stored included, round-trips. With the colour transform (3 interleaved channels)
//! channel 0 is G, channel 1 is R - G and channel 2 is B - G. Each channel's values lie in its
//! stored [lowest, highest] range; the decoder rejects anything else.
//!
//! The table section (decompressed):
//!
//! | bytes | field |
//! | --- | --- |
//! | 2 | `T`, the number of tables: 1..=256 |
//! | 256 × channels | the context map: the table of each context (below), < `T` |
//! | per table: 1 | `n`, the tokens it describes: 1..=72 |
//! | per table: `n` | frequency codes of tokens `0..n` (0: absent), 0..=52, at least one not 0 |
//!
//! A table's frequencies sum to 2^11: with code weights `w(c) = (4 + (c - 1) % 4) << ((c - 1)
//! / 4)`, `p` tokens present and `W` the sum of their weights, token `t` has frequency
//! `1 + w(c_t) * (2^11 - p) / W` (integer division), and the first token of the largest
//! frequency gets what is left to 2^11. The tokens take consecutive slots in order, each as
//! many as its frequency, from `start_t`.
//!
//! The rANS stream is `S` 32-bit states, each at least 2^16 (`S` = 2 in version 2, 4 in
//! versions 3 and 4, 32 in versions 5 and 6; sample `k` in coding order, counted over all rows
//! and channels, uses state `k % S`), then 16-bit words. A sample's token, with `x` its state and the table its context
//! maps to: `t` the token of slot `x % 2^11`; then `x = f_t * (x >> 11) + x % 2^11 -
//! start_t`, and while `x < 2^16`, `x = x << 16 | the next word` (words are read in one
//! sequence, whichever state takes them). After the last sample every state is 2^16 and every
//! word has been read (the encoder codes backwards from those states). The raw-bit stream is read LSB first and zero-padded to a byte; its last byte
//! holds at least one bit that is read.
//!
//! Tokens: with `u` the zigzagged residual (`2e` for `e >= 0`, `-2e - 1` otherwise), the token
//! of `u < 16` is `u`; of a larger `u` of bit length `b + 1`, `16 + 4 (b - 4)` plus the two
//! bits below the leading one, then `b - 2` raw bits: the low bits of `u`.
//!
//! # The model of versions 2 to 6
//!
//! Channels are coded as images of `columns` pixels a row, row by row, the channels of a row
//! one after the other. Before that the encoder reads the samples once to choose their reading
//! (signed or not) and each channel's range; a channel that uses at most half of the values in
//! its range is *compacted*: the model codes the ranks of its values (rescaled CT, palettes),
//! in the model range `[lo, hi]` (the stored range, or `[0, m - 1]`). For each sample, with W,
//! N, NW, NE, NN its neighbours (NW = N in the first column, NE = N in the last, NN = N in the
//! second row) and `|e_X|` the magnitude of the residual at X:
//! - the prediction: MED, the median of W, N and W + N - NW; in the first row W (for the first
//!   sample `lo + (hi - lo) / 2`), in the first column of the others N. Version 6 cuts each row
//!   of `w` samples (of a channel) into 8 segments, the `k`-th from sample `k w / 8` (integer
//!   division; `k` = 0..8, so rows shorter than 8 have empty segments), and predicts the first
//!   sample of every segment as the first column's: N, in the first row `lo + (hi - lo) / 2`;
//! - the context, from the rows above only (so the decoder computes a row's contexts ahead,
//!   vectorised, and its per-sample loops carry no context dependency): the error size `a =
//!   |e_NWW| + |e_NEE| + 2 (|e_NW| + |e_N| + |e_NE| + |e_NN| + 2 |e_B|)`, with `e_B` channel
//!   0's residual at this pixel for the other channels (0 for channel 0), magnitudes beyond a
//!   row's ends those at its ends and those above the first row 0; and the gradient `g = |N -
//!   NW| + |NE - N| + |N - NN|` (0 in the first row). Quantised: `q` the half-octave of `a + 2`
//!   (`2 floor(log2(a + 2))` plus the bit below its leading one, minus 2; at most 31: a = 0, 1,
//!   2-3, 4-5, 6-9, ...), `gq` the bit length of `g` (at most 7); the context of channel `ch`
//!   is `256 ch + 8 q + gq`;
//! - the residual `x - prediction`, as a token of the context's table and raw bits.
//!
//! The encoder's first pass computes the tokens and counts them by context; it then picks the
//! context map among a few groupings of the contexts (per channel or shared; error sizes
//! merged by 1, 2, 4 or all; gradients kept or merged) by the estimated size, tables included,
//! and quantises each table's counts to the nearest code (in ratio). Both sides compute the
//! frequencies from the codes in integers, the contexts in integers and exactly converted f32
//! (exponent bits), so every platform decodes alike; the tests pin the output of a few objects.
//!
//! # Stored format of version 1
//!
//! As version 2 but for the format version `1`, the five fields from the table section method
//! to the raw-bit stream length replaced by two: the arithmetic-coded stream length (8 bytes)
//! and the raw-bit stream length (8 bytes); the payload after the value tables is the rest, the
//! arithmetic-coded stream and the raw-bit stream (LSB first, zero-padded bytes).
//!
//! # The model of version 1
//!
//! Channels are coded as images of `columns` pixels a row, row by row, the channels of a row
//! one after the other. Before that the encoder reads the samples once to choose their reading
//! (signed or not) and each channel's range; a channel that uses at most half of the values in
//! its range is *compacted*: the model codes the ranks of its values (rescaled CT, palettes).
//! For each sample, with W, N, NW, NE its neighbours (the first row sees W everywhere, the first
//! column N), in 1/8 units:
//! - five predictions: `W + NE - N`; N or W corrected by the signed errors `te` the blend made
//!   at W, N, NW and NE (the three error-feedback predictors of JPEG XL's "self-correcting"
//!   predictor); and MED (LOCO-I's median edge detector);
//! - the blend: their average weighted by `1 / (1 + e)`, `e` each one's absolute error summed
//!   over NWW, NW, N, NE and NEE of the row above (computed per row in single-precision IEEE
//!   arithmetic, which every platform rounds alike, normalised to 2^22), clamped to the range of
//!   W, N and NE unless the errors at W, N and NE agree in sign;
//! - the context `q`: a half-octave quantisation of `(|te_W| + |te_N| + |te_NW| + |te_NE|) / 4`
//!   (for colour channels 1 and 2 plus channel 0's residual at this pixel), 40 values;
//! - the prediction coded against is MED where, in contexts `q / 4`, its decaying error sum has
//!   lately been below the blend's, else the blend; rounded, clamped to the channel's range;
//! - the residual `e = x - prediction`: its bit length `k` (0 for e = 0) is coded by the
//!   adaptive binary decision "k < k0" then unary steps down or up from `k0`, the context's
//!   running average of `k`; then (k > 0) the sign, in context `q` and the sign of
//!   `te_W + te_N`; then (k > 1) the bit below the leading one, in context `q` and `k`; the
//!   `k - 2` low bits go to the raw-bit stream (LSB first, zero-padded bytes).
//!
//! Probabilities are 16-bit, adapting by a shift of about `log2(n + 1.5)` for their `n`-th use,
//! then 6. The arithmetic coder is LZMA's range coder (32-bit range, carry propagation, 16-bit
//! probabilities, 5 bytes of flush). Its encoder is kept for the tests only.
//!
//! These are outlines: the code of this module (every constant, rounding and initial state)
//! is the normative definition of every version, and the tests pin each one's output for a
//! few objects (version 1's as its original encoder wrote it); a change to any of it needs a
//! new format version.
//!
//! [`decode`](super::decode) checks the CRC, every field and every length against
//! `logical_len` before it allocates or decompresses anything (the tables of versions 2 to 6:
//! at most 256 of 8 KiB); a value outside its channel's range, a stream read past its end or not to its
//! end is an error, never a panic; so is a version-4, -5 or -6 decode that does not match its checksum.

use crate::error::Result;

use xxhash_rust::xxh3::xxh3_64;

use super::{codec_err, encode_hot, Codec, PixelKind, PixelLayout, Reader, DEFAULT_HOT_LEVEL};

const MAGIC: [u8; 3] = *b"DVC";
/// The format [`encode_cold`] writes.
const VERSION: u8 = VERSION_6;
const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;
/// Version 3 with the XXH3-64 of the logical bytes before the CRC.
const VERSION_4: u8 = 4;
/// Version 4 with 32 rANS states (8 to a vector of the x86-64-v3 decoder).
const VERSION_5: u8 = 5;
/// Version 5 with each row's MED chain cut into [`SEGMENTS`] independent ones.
const VERSION_6: u8 = 6;
/// The segments of a row (per channel) in version 6: each starts where `k * w / SEGMENTS`
/// pixels of the row's `w` come before it, and its first pixel is predicted as a row's first,
/// so the decoder reconstructs the segments side by side (8: one AVX2 vector's lanes).
const SEGMENTS: usize = 8;
/// The XXH3-64 of the logical bytes of versions 4 to 6.
const CHECK_LEN: usize = 8;
/// Fixed header of version 1, up to and including the raw-bit stream length.
const FIXED_HEADER: usize = 4 + 4 + 4 + 8 + 8 + 8 + 1 + 8 + 8 + 8 + 8;
/// Fixed header of versions 2 to 6: the table section's method and raw length come on top.
const FIXED_HEADER_V2: usize = FIXED_HEADER + 1 + 8 + 8;
const CRC_LEN: usize = 4;

const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_SIGNED: u8 = 2;
const FLAG_TRANSFORM: u8 = 4;
const FLAG_SWAP_PAIRS: u8 = 8;

const METHOD_STORED: u8 = 0;
const METHOD_ZSTD: u8 = 1;

/// Most pixels in a row: the row buffers (~100 bytes a column and channel) stay small.
const MAX_COLUMNS: usize = 1 << 16;

/// Most channels (interleaved samples per pixel) the model codes.
pub const MAX_CHANNELS: usize = 4;

/// Why [`encode_cold`] leaves an object to the hot codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdFallback {
    /// No pixel data (or none located): nothing for the image model.
    NoPixelData,
    /// Encapsulated (already compressed) pixel data.
    Encapsulated,
    /// Samples the model does not code: not 8 or 16 bits, or more than [`MAX_CHANNELS`] per pixel.
    UnsupportedSamples,
    /// The pixel span lies outside the object.
    BadLayout,
}

/// `None` when [`encode_cold`] codes this object with the cold model, else why it does not.
pub fn cold_support(logical_len: usize, layout: Option<&PixelLayout>) -> Option<ColdFallback> {
    let Some(l) = layout else {
        return Some(ColdFallback::NoPixelData);
    };
    if l.offset.checked_add(l.length).is_none_or(|end| end > logical_len) {
        return Some(ColdFallback::BadLayout);
    }
    if l.kind == PixelKind::Verbatim {
        return Some(ColdFallback::Encapsulated);
    }
    let spp = if l.planar { 1 } else { l.samples_per_pixel.max(1) as usize };
    if !matches!(l.bytes_per_sample, 1 | 2) || spp > MAX_CHANNELS {
        return Some(ColdFallback::UnsupportedSamples);
    }
    None
}

/// Encodes `logical` with the cold codec when [`cold_support`] allows, else with the hot codec
/// (at its default level). The result is never larger than the hot codec's: when the hot
/// codec does better on an object, its output is returned. Returns the codec that was used.
pub fn encode_cold(logical: &[u8], layout: Option<&PixelLayout>) -> Result<(Codec, Vec<u8>)> {
    if cold_support(logical.len(), layout).is_some() {
        return encode_hot(logical, layout, DEFAULT_HOT_LEVEL);
    }
    let layout = layout.expect("supported layouts exist");
    let cold = encode_model(logical, layout)?;
    let (hot_codec, hot) = encode_hot(logical, Some(layout), DEFAULT_HOT_LEVEL)?;
    if hot.len() < cold.len() {
        return Ok((hot_codec, hot));
    }
    Ok((Codec::Cold, cold))
}

/// The cold model's encoding of a supported object (no hot fallback; for tests and benchmarks).
#[doc(hidden)]
pub fn encode_cold_only(logical: &[u8], layout: &PixelLayout) -> Result<Vec<u8>> {
    if let Some(why) = cold_support(logical.len(), Some(layout)) {
        return Err(codec_err(format!("the cold model does not code this object: {why:?}")));
    }
    encode_model(logical, layout)
}

/// The cold model's encoding in an older format `version` that still has an encoder (for
/// benchmarks that compare versions on the same files).
#[doc(hidden)]
pub fn encode_cold_version(logical: &[u8], layout: &PixelLayout, version: u8) -> Result<Vec<u8>> {
    if let Some(why) = cold_support(logical.len(), Some(layout)) {
        return Err(codec_err(format!("the cold model does not code this object: {why:?}")));
    }
    if !matches!(version, VERSION_2 | VERSION_3 | VERSION_4 | VERSION_5 | VERSION_6) {
        return Err(codec_err(format!("no encoder for cold format version {version}")));
    }
    encode_version(logical, layout, version)
}

// ---------------------------------------------------------------------------------------------
// Geometry.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    bps: usize,
    channels: usize,
    big_endian: bool,
    signed: bool,
    transform: bool,
    columns: usize,
    pixels: usize,
}

impl Geometry {
    fn pixel_bytes(&self) -> usize {
        self.bps * self.channels
    }
    fn body_len(&self) -> usize {
        self.pixels * self.pixel_bytes()
    }
    /// Range of a channel's values the format allows.
    fn limits(&self, ch: usize) -> (i32, i32) {
        let (lo, hi) = match (self.bps, self.signed) {
            (1, false) => (0, 255),
            (1, true) => (-128, 127),
            (_, false) => (0, 65535),
            (_, true) => (-32768, 32767),
        };
        if self.transform && ch > 0 {
            (lo - hi, hi - lo)
        } else {
            (lo, hi)
        }
    }

    #[inline(always)]
    fn sample(&self, b: &[u8]) -> i32 {
        if self.bps == 1 {
            if self.signed {
                b[0] as i8 as i32
            } else {
                b[0] as i32
            }
        } else {
            let v = if self.big_endian {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            };
            if self.signed {
                v as i16 as i32
            } else {
                v as i32
            }
        }
    }

    #[inline(always)]
    fn put(&self, v: i32, b: &mut [u8]) {
        if self.bps == 1 {
            b[0] = v as u8;
        } else {
            let v = v as u16;
            b[..2].copy_from_slice(&if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder.

fn encode_model(logical: &[u8], layout: &PixelLayout) -> Result<Vec<u8>> {
    encode_version(logical, layout, VERSION)
}

/// The cold model's encoding in format `version`: [`VERSION`], or version 1 for the tests that
/// pin its decoder (archives hold version-1 objects; nothing writes them any more).
fn encode_version(logical: &[u8], layout: &PixelLayout, version: u8) -> Result<Vec<u8>> {
    let (off, len) = (layout.offset, layout.length);
    let bps = layout.bytes_per_sample as usize;
    let channels = if layout.planar { 1 } else { layout.samples_per_pixel.max(1) as usize };
    let pixels = len / (bps * channels);
    let mut span = &logical[off..off + pixels * bps * channels];
    // 8-bit samples in Explicit VR Big Endian OW words come in swapped pairs: put them back
    // in order when that reads smoother.
    let swapped;
    let swap = bps == 1 && layout.big_endian && span.len().is_multiple_of(2) && swap_reads_smoother(span);
    if swap {
        swapped = swap_pairs(span);
        span = &swapped;
    }
    let mut g = Geometry {
        bps,
        channels,
        big_endian: layout.big_endian && bps > 1,
        signed: false,
        transform: false,
        columns: 1,
        pixels,
    };
    let columns = layout.columns as usize;
    // No columns, or more than the pixels: rows of up to MAX_COLUMNS pixels.
    g.columns = if columns == 0 || columns > pixels { pixels.max(1) } else { columns }.min(MAX_COLUMNS);
    g.transform = channels == 3;
    let infos = analyse(span, &mut g);

    let body_len = g.body_len();
    let mut rest = Vec::with_capacity(logical.len() - body_len);
    rest.extend_from_slice(&logical[..off]);
    rest.extend_from_slice(&logical[off + body_len..]);
    let (rest_method, rest_stored) = compress_rest(&rest)?;

    // The pixel streams, and the header fields that describe them.
    let mut fields = Vec::new();
    let streams: Vec<Vec<u8>> = match version {
        #[cfg(test)]
        VERSION_1 => {
            let (ac, raw) = encode_pixels(span, &g, &infos);
            vec![ac, raw]
        }
        _ => {
            let (tables, rans, raw) =
                encode_pixels_v2(span, &g, &infos, rans_states(version), version >= VERSION_6);
            let (table_method, table_stored) = compress_tables(&tables)?;
            fields.push(table_method);
            fields.extend_from_slice(&(tables.len() as u64).to_le_bytes());
            vec![table_stored, rans, raw]
        }
    };
    for s in &streams {
        fields.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }

    let payload: usize = streams.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(
        FIXED_HEADER_V2 + 12 * channels + rest_stored.len() + payload + CHECK_LEN + CRC_LEN,
    );
    out.extend_from_slice(&MAGIC);
    out.push(version);
    let mut flags = 0;
    if g.big_endian {
        flags |= FLAG_BIG_ENDIAN;
    }
    if g.signed {
        flags |= FLAG_SIGNED;
    }
    if g.transform {
        flags |= FLAG_TRANSFORM;
    }
    if swap {
        flags |= FLAG_SWAP_PAIRS;
    }
    out.push(flags);
    out.push(bps as u8);
    out.push(channels as u8);
    out.push(0);
    out.extend_from_slice(&(g.columns as u32).to_le_bytes());
    out.extend_from_slice(&(logical.len() as u64).to_le_bytes());
    out.extend_from_slice(&(off as u64).to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.push(rest_method);
    out.extend_from_slice(&(rest.len() as u64).to_le_bytes());
    out.extend_from_slice(&(rest_stored.len() as u64).to_le_bytes());
    out.extend_from_slice(&fields);
    for c in &infos {
        out.extend_from_slice(&c.lo.to_le_bytes());
        out.extend_from_slice(&c.hi.to_le_bytes());
        out.extend_from_slice(&(c.values.len() as u32).to_le_bytes());
    }
    for c in &infos {
        for w in c.values.windows(2) {
            put_varint(&mut out, (w[1] - w[0] - 1) as u32);
        }
    }
    out.extend_from_slice(&rest_stored);
    for s in &streams {
        out.extend_from_slice(s);
    }
    if version >= VERSION_4 {
        // Taken from the bytes just coded, so a decode that matches it is this object.
        out.extend_from_slice(&xxh3_64(logical).to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Whether the bytes read in swapped pairs vary less from one to the next than as they are.
fn swap_reads_smoother(span: &[u8]) -> bool {
    let (mut plain, mut swapped) = (0u64, 0u64);
    for (i, w) in span.chunks_exact(4).enumerate() {
        if i % 4 != 0 {
            continue; // a quarter of the words is plenty
        }
        let d = |a: u8, b: u8| (a as i32 - b as i32).unsigned_abs() as u64;
        plain += d(w[0], w[1]) + d(w[1], w[2]) + d(w[2], w[3]);
        swapped += d(w[1], w[0]) + d(w[0], w[3]) + d(w[3], w[2]);
    }
    swapped < plain
}

fn swap_pairs(b: &[u8]) -> Vec<u8> {
    b.chunks_exact(2).flat_map(|p| [p[1], p[0]]).collect()
}

/// zstd level for the rest of the object, by its size. Measured on the corpus: levels 19/12
/// instead of these change the total stored size by < 0.1% and cost ~15% of the encode time
/// (a big rest is a palette LUT, overlays, waveforms: level 6 is fast there).
fn rest_level(n: usize) -> i32 {
    match n {
        0..=16_384 => 12,
        16_385..=262_144 => 9,
        _ => 6,
    }
}

fn compress_rest(rest: &[u8]) -> Result<(u8, Vec<u8>)> {
    if rest.is_empty() {
        return Ok((METHOD_STORED, Vec::new()));
    }
    let z =
        zstd::bulk::compress(rest, rest_level(rest.len())).map_err(|e| codec_err(format!("zstd: {e}")))?;
    if z.len() < rest.len() {
        Ok((METHOD_ZSTD, z))
    } else {
        Ok((METHOD_STORED, rest.to_vec()))
    }
}

/// What the decoder needs to know of a channel before its pixels: its range and, when the
/// channel is compacted, its distinct values (the model then codes their ranks).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChanInfo {
    lo: i32,
    hi: i32,
    /// Sorted distinct values (first `lo`, last `hi`), or empty: not compacted.
    values: Vec<i32>,
}

impl ChanInfo {
    /// Range of the values the model codes.
    fn model_range(&self) -> (i32, i32) {
        if self.values.is_empty() {
            (self.lo, self.hi)
        } else {
            (0, self.values.len() as i32 - 1)
        }
    }
}

/// Reads the samples once: picks their interpretation (two's complement when that gives the
/// narrower ranges) and returns each channel's range and distinct values (after the colour
/// transform). A channel whose values fill at most half of its range is compacted.
fn analyse(span: &[u8], g: &mut Geometry) -> Vec<ChanInfo> {
    // Which raw (unsigned) sample values occur, per channel.
    let bits = 8 * g.bps as u32;
    let words = (1usize << bits) / 64;
    let mut seen = vec![vec![0u64; words]; g.channels];
    let mut mark = |ch: usize, v: usize| seen[ch][v >> 6] |= 1 << (v & 63);
    match (g.bps, g.big_endian) {
        (1, _) => span
            .chunks_exact(g.channels)
            .for_each(|p| p.iter().enumerate().for_each(|(ch, &b)| mark(ch, b as usize))),
        (_, false) => span.chunks_exact(2 * g.channels).for_each(|p| {
            p.chunks_exact(2)
                .enumerate()
                .for_each(|(ch, b)| mark(ch, u16::from_le_bytes([b[0], b[1]]) as usize))
        }),
        (_, true) => span.chunks_exact(2 * g.channels).for_each(|p| {
            p.chunks_exact(2)
                .enumerate()
                .for_each(|(ch, b)| mark(ch, u16::from_be_bytes([b[0], b[1]]) as usize))
        }),
    }
    // Read as two's complement, the upper half of the values comes first.
    let signed: Vec<Vec<u64>> = seen.iter().map(|m| [&m[words / 2..], &m[..words / 2]].concat()).collect();
    let range = |maps: &[Vec<u64>]| -> u64 {
        maps.iter()
            .filter_map(|m| {
                let first = m.iter().position(|&w| w != 0)?;
                let last = m.iter().rposition(|&w| w != 0)?;
                Some(
                    (last * 64 + 63
                        - m[last].leading_zeros() as usize
                        - (first * 64 + m[first].trailing_zeros() as usize)) as u64,
                )
            })
            .sum()
    };
    g.signed = range(&signed) < range(&seen);
    let (maps, min) = if g.signed { (signed, -(1i32 << (bits - 1))) } else { (seen, 0) };
    if !g.transform {
        return maps.iter().map(|m| ChanInfo::from_map(m, min)).collect();
    }
    // Colour: channel 0 is G as read, channels 1 and 2 need the transform.
    let (lo, hi) = g.limits(1);
    let mut diff = vec![vec![0u64; ((hi - lo) as usize >> 6) + 1]; 2];
    let mut px = [0i32; MAX_CHANNELS];
    for p in span.chunks_exact(g.pixel_bytes()) {
        load_pixel(p, g, &mut px);
        for (d, &v) in diff.iter_mut().zip(&px[1..3]) {
            let at = (v - lo) as usize;
            d[at >> 6] |= 1 << (at & 63);
        }
    }
    vec![
        ChanInfo::from_map(&maps[1], min),
        ChanInfo::from_map(&diff[0], lo),
        ChanInfo::from_map(&diff[1], lo),
    ]
}

impl ChanInfo {
    /// From a bitmap of the values that occur (bit i: value `min + i`).
    fn from_map(map: &[u64], min: i32) -> ChanInfo {
        let values: Vec<i32> = map
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| {
                let mut w = w;
                std::iter::from_fn(move || {
                    (w != 0).then(|| {
                        let b = w.trailing_zeros() as usize;
                        w &= w - 1;
                        min + (i * 64 + b) as i32
                    })
                })
            })
            .collect();
        let (Some(&lo), Some(&hi)) = (values.first(), values.last()) else {
            return ChanInfo { lo: 0, hi: 0, values: Vec::new() };
        };
        let compact = hi > lo && values.len() as u64 * 2 <= (hi - lo) as u64 + 1;
        ChanInfo { lo, hi, values: if compact { values } else { Vec::new() } }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline(always)]
fn load_pixel(p: &[u8], g: &Geometry, px: &mut [i32; MAX_CHANNELS]) {
    for ch in 0..g.channels {
        px[ch] = g.sample(&p[ch * g.bps..]);
    }
    if g.transform {
        let (r, gr, b) = (px[0], px[1], px[2]);
        px[0] = gr;
        px[1] = r - gr;
        px[2] = b - gr;
    }
}

#[inline(always)]
fn read<const BPS: usize, const BE: bool, const SIGNED: bool>(b: &[u8]) -> i32 {
    match (BPS, BE, SIGNED) {
        (1, _, false) => b[0] as i32,
        (1, _, true) => b[0] as i8 as i32,
        (_, false, false) => u16::from_le_bytes([b[0], b[1]]) as i32,
        (_, false, true) => i16::from_le_bytes([b[0], b[1]]) as i32,
        (_, true, false) => u16::from_be_bytes([b[0], b[1]]) as i32,
        (_, true, true) => i16::from_be_bytes([b[0], b[1]]) as i32,
    }
}

/// Channel `ch` of a row of pixels into `dst`.
fn load_row<const BPS: usize, const BE: bool, const SIGNED: bool>(
    row: &[u8],
    g: &Geometry,
    ch: usize,
    dst: &mut [i32],
) {
    let at = ch * BPS;
    for (d, p) in dst.iter_mut().zip(row.chunks_exact(BPS * g.channels)) {
        *d = read::<BPS, BE, SIGNED>(&p[at..at + BPS]);
    }
}

/// The same with the colour transform.
fn load_row_rgb(row: &[u8], g: &Geometry, ch: usize, dst: &mut [i32]) {
    let mut px = [0i32; MAX_CHANNELS];
    for (d, p) in dst.iter_mut().zip(row.chunks_exact(g.pixel_bytes())) {
        load_pixel(p, g, &mut px);
        *d = px[ch];
    }
}

/// One sample's `BPS` bytes in its byte order (its low bits: any bit pattern round-trips).
#[inline(always)]
fn put_sample<const BPS: usize, const BE: bool>(v: i32, b: &mut [u8]) {
    match (BPS, BE) {
        (1, _) => b[0] = v as u8,
        (_, false) => b.copy_from_slice(&(v as u16).to_le_bytes()),
        (_, true) => b.copy_from_slice(&(v as u16).to_be_bytes()),
    }
}

/// A row of pixels from the channels' rows.
fn store_row<const BPS: usize, const BE: bool>(rows: &[&[i32]], g: &Geometry, out: &mut [u8]) {
    for (ch, src) in rows.iter().enumerate() {
        let at = ch * BPS;
        for (p, &v) in out.chunks_exact_mut(BPS * g.channels).zip(src.iter()) {
            put_sample::<BPS, BE>(v, &mut p[at..at + BPS]);
        }
    }
}

/// The same with the inverse colour transform.
fn store_row_rgb(rows: &[&[i32]], g: &Geometry, out: &mut [u8]) {
    let (gr, rg, bg) = (&rows[0], &rows[1], &rows[2]);
    for (c, p) in out.chunks_exact_mut(g.pixel_bytes()).enumerate() {
        let green = gr[c];
        g.put(rg[c].wrapping_add(green), &mut p[..]);
        g.put(green, &mut p[g.bps..]);
        g.put(bg[c].wrapping_add(green), &mut p[2 * g.bps..]);
    }
}

/// Turns the decoder's model rows into output bytes, the same for both format versions:
/// compacted channels' ranks back to values (into scratch rows: the model keeps its own), then
/// the samples stored in the object's byte layout.
struct RowWriter {
    store: fn(&[&[i32]], &Geometry, &mut [u8]),
    scratch: Vec<Vec<i32>>,
}

impl RowWriter {
    fn new(g: &Geometry) -> Self {
        let store = match (g.bps, g.big_endian) {
            _ if g.transform => store_row_rgb,
            (1, _) => store_row::<1, false>,
            (_, false) => store_row::<2, false>,
            (_, true) => store_row::<2, true>,
        };
        RowWriter { store, scratch: vec![vec![0i32; g.columns]; g.channels] }
    }

    /// `ups`: each channel's decoded row (as the model holds it), `out`: the row's bytes.
    /// `V3`: the CPU has AVX2 (as for [`decode_pixels_body`]); a grey row (one channel, the
    /// common case) then goes from ranks to bytes in one pass, vectorised where it has no
    /// ranks: the rank lookup into scratch rows, then the store, were ~17 % of the decode
    /// (perf, the tier bench's CT).
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    fn write<'a, const V3: bool>(
        &mut self,
        mut ups: impl Iterator<Item = &'a [i32]>,
        infos: &[ChanInfo],
        g: &Geometry,
        out: &mut [u8],
    ) {
        #[cfg(target_arch = "x86_64")]
        if V3 && g.channels == 1 && !g.transform {
            let src = ups.next().expect("one channel");
            // SAFETY: `V3` is set only where the CPU has AVX2 (see `decode_pixels_rans`).
            unsafe {
                match (g.bps, g.big_endian) {
                    (1, _) => store_grey_avx2::<1, false>(src, &infos[0].values, out),
                    (_, false) => store_grey_avx2::<2, false>(src, &infos[0].values, out),
                    (_, true) => store_grey_avx2::<2, true>(src, &infos[0].values, out),
                }
            }
            return;
        }
        let w = out.len() / g.pixel_bytes();
        let mut rows: [&[i32]; MAX_CHANNELS] = [&[]; MAX_CHANNELS];
        for (((src, dst), info), row) in ups.zip(self.scratch.iter_mut()).zip(infos).zip(rows.iter_mut()) {
            if info.values.is_empty() {
                *row = &src[..w];
            } else {
                // In range: the row decoded without error (the clamp only spares the bounds
                // checks, so that the loop vectorises).
                let (dst, last) = (&mut dst[..w], info.values.len() - 1);
                dst.iter_mut().zip(&src[..w]).for_each(|(d, &x)| *d = info.values[(x as usize).min(last)]);
                *row = dst;
            }
        }
        (self.store)(&rows[..g.channels], g, out);
    }
}

/// [`store_row`] of one channel, with a compacted channel's ranks mapped to values (`values`
/// empty: not compacted). The map is a scalar loop (an AVX2 gather was no faster, and slower
/// on CPUs with slow gathers); without it, 8 samples a step, their low bytes picked by a byte
/// shuffle (as `v as u16` or `v as u8`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_grey_avx2<const BPS: usize, const BE: bool>(src: &[i32], values: &[i32], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let w = out.len() / BPS;
    let src = &src[..w];
    let put = put_sample::<BPS, BE>;
    if !values.is_empty() {
        // In range: the row decoded without error (the clamp only spares the bounds checks).
        let last = values.len() - 1;
        for (&x, o) in src.iter().zip(out.chunks_exact_mut(BPS)) {
            put(values[(x as usize).min(last)], o);
        }
        return;
    }
    // Within each 128-bit half, the low byte(s) of its 4 lanes to its first 4 (8) bytes.
    let pick = match (BPS, BE) {
        (1, _) => _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1,
        ),
        (_, false) => _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1,
            -1, -1, -1, -1, -1,
        ),
        (_, true) => _mm256_setr_epi8(
            1, 0, 5, 4, 9, 8, 13, 12, -1, -1, -1, -1, -1, -1, -1, -1, 1, 0, 5, 4, 9, 8, 13, 12, -1, -1, -1,
            -1, -1, -1, -1, -1,
        ),
    };
    // The halves' picked bytes side by side: 32-bit lanes 0, 1 (BPS 2) or 0 (BPS 1) of each.
    let halves = if BPS == 1 {
        _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0)
    } else {
        _mm256_setr_epi32(0, 1, 4, 5, 0, 0, 0, 0)
    };
    let whole = w - w % 8;
    for (s8, o) in src[..whole].chunks_exact(8).zip(out.chunks_exact_mut(8 * BPS)) {
        // SAFETY: 8 i32s.
        let v = unsafe { _mm256_loadu_si256(s8.as_ptr() as *const __m256i) };
        let b = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, pick), halves));
        if BPS == 1 {
            o.copy_from_slice(&(_mm_cvtsi128_si64(b) as u64).to_le_bytes());
        } else {
            // SAFETY: 16 bytes.
            unsafe { _mm_storeu_si128(o.as_mut_ptr() as *mut __m128i, b) };
        }
    }
    for (&x, o) in src[whole..].iter().zip(out[whole * BPS..].chunks_exact_mut(BPS)) {
        put(x, o);
    }
}

/// Per channel: value - lo -> rank for a compacted channel, else empty.
fn rank_maps(infos: &[ChanInfo]) -> Vec<Vec<u32>> {
    infos
        .iter()
        .map(|c| {
            let mut m = Vec::new();
            if !c.values.is_empty() {
                m.resize((c.hi - c.lo) as usize + 1, 0);
                for (rank, &v) in c.values.iter().enumerate() {
                    m[(v - c.lo) as usize] = rank as u32;
                }
            }
            m
        })
        .collect()
}

type LoadRow = fn(&[u8], &Geometry, usize, &mut [i32]);

fn row_loader(g: &Geometry) -> LoadRow {
    match (g.bps, g.big_endian, g.signed) {
        _ if g.transform => load_row_rgb,
        (1, _, false) => load_row::<1, false, false>,
        (1, _, true) => load_row::<1, false, true>,
        (_, false, false) => load_row::<2, false, false>,
        (_, false, true) => load_row::<2, false, true>,
        (_, true, false) => load_row::<2, true, false>,
        (_, true, true) => load_row::<2, true, true>,
    }
}

/// Channel `ch` of a row of pixels as the model codes it (ranks of compacted channels).
fn load_model_row(
    load: LoadRow,
    row: &[u8],
    g: &Geometry,
    ch: usize,
    info: &ChanInfo,
    rank: &[u32],
    dst: &mut [i32],
) {
    load(row, g, ch, dst);
    if !rank.is_empty() {
        dst.iter_mut().for_each(|v| *v = rank[(*v - info.lo) as usize] as i32);
    }
}

#[cfg(test)]
fn encode_pixels(span: &[u8], g: &Geometry, infos: &[ChanInfo]) -> (Vec<u8>, Vec<u8>) {
    let mut io = Encoder { rc: RangeEncoder::new(span.len() / 4), bits: BitWriter::new(span.len() / 16) };
    if g.pixels > 0 {
        let mut chans: Vec<Channel> =
            infos.iter().map(|c| Channel::new(c.model_range(), g.columns)).collect();
        let ranks = rank_maps(infos);
        let load = row_loader(g);
        let row_bytes = g.columns * g.pixel_bytes();
        for (r, row) in span.chunks(row_bytes).enumerate() {
            let w = row.len() / g.pixel_bytes();
            for (ch, c) in chans.iter_mut().enumerate() {
                load_model_row(load, row, g, ch, &infos[ch], &ranks[ch], &mut c.cur[PAD..PAD + w]);
            }
            code_row(&mut io, &mut chans, r, w);
        }
    }
    (io.rc.finish(), io.bits.finish())
}

// ---------------------------------------------------------------------------------------------
// Decoder.

// The header reader is codec.rs's (this module is its child); cold streams add varints.
impl Reader<'_> {
    /// LEB128, at most 5 bytes, no bits beyond 32.
    fn varint(&mut self) -> Result<u32> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.u8()?;
            v |= ((b & 0x7F) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| codec_err("bad varint"));
            }
        }
        Err(codec_err("bad varint"))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn len(&mut self) -> Result<usize> {
        usize::try_from(u64::from_le_bytes(self.take()?)).map_err(|_| codec_err("length overflows"))
    }
}

/// Decodes a cold stream into `out` (its allocation reused, only growth zero-filled: every byte
/// is written). `Ok(true)`: the decoded bytes matched the logical bytes' checksum stored with
/// them (versions 4 to 6); `Ok(false)`: the stream has none (versions 1-3), only its CRC was checked.
/// `check_crc`: whether to check the stream's CRC-32 (see [`super::StoredCrc`]).
pub(super) fn decode_cold_into(
    stored: &[u8],
    logical_len: usize,
    check_crc: bool,
    out: &mut Vec<u8>,
) -> Result<bool> {
    if stored.len() < FIXED_HEADER + CRC_LEN {
        return Err(codec_err(format!("stored object too short ({} bytes)", stored.len())));
    }
    let (body, crc) = stored.split_at(stored.len() - CRC_LEN);
    if check_crc && crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(codec_err("checksum mismatch"));
    }
    let mut r = Reader { b: body, pos: 0 };
    if r.take::<3>()? != MAGIC {
        return Err(codec_err("bad magic"));
    }
    let version = r.u8()?;
    if !matches!(version, VERSION_1 | VERSION_2 | VERSION_3 | VERSION_4 | VERSION_5 | VERSION_6) {
        return Err(codec_err(format!("unsupported cold format version {version}")));
    }
    // Version 4 ends with the logical bytes' checksum: the payload ends before it (the body is
    // at least FIXED_HEADER long, so the split is past what was read).
    let (body, check) = if version >= VERSION_4 {
        let (payload, check) = body.split_at(body.len() - CHECK_LEN);
        (payload, Some(u64::from_le_bytes(check.try_into().expect("8 bytes"))))
    } else {
        (body, None)
    };
    r.b = body;
    let flags = r.u8()?;
    let bps = r.u8()? as usize;
    let channels = r.u8()? as usize;
    let reserved = r.u8()?;
    let columns = r.u32()? as usize;
    let stored_logical = r.len()?;
    let off = r.len()?;
    let len = r.len()?;
    let rest_method = r.u8()?;
    let rest_raw = r.len()?;
    let rest_stored = r.len()?;
    // From version 2 the table section (method, raw length) precedes the pixel streams' lengths.
    let tabled = version != VERSION_1;
    let (table_method, table_raw) = if tabled { (r.u8()?, r.len()?) } else { (0, 0) };
    let streams = if tabled { 3 } else { 2 };
    let mut stream_lens = [0usize; 3];
    for l in &mut stream_lens[..streams] {
        *l = r.len()?;
    }

    if stored_logical != logical_len {
        return Err(codec_err(format!(
            "stored object is for {stored_logical} bytes, expected {logical_len}"
        )));
    }
    if reserved != 0
        || flags & !(FLAG_BIG_ENDIAN | FLAG_SIGNED | FLAG_TRANSFORM | FLAG_SWAP_PAIRS) != 0
        || (flags & FLAG_SWAP_PAIRS != 0 && bps != 1)
        || !matches!(bps, 1 | 2)
        || !(1..=MAX_CHANNELS).contains(&channels)
        || (flags & FLAG_TRANSFORM != 0) != (channels == 3)
        || (flags & FLAG_BIG_ENDIAN != 0 && bps == 1)
        || rest_method > METHOD_ZSTD
        || table_method > METHOD_ZSTD
    {
        return Err(codec_err(format!("bad header (flags {flags:#x}, bps {bps}, channels {channels})")));
    }
    if off.checked_add(len).is_none_or(|end| end > logical_len) {
        return Err(codec_err("pixel span outside the object"));
    }
    let pixels = len / (bps * channels);
    let g = Geometry {
        bps,
        channels,
        big_endian: flags & FLAG_BIG_ENDIAN != 0,
        signed: flags & FLAG_SIGNED != 0,
        transform: flags & FLAG_TRANSFORM != 0,
        columns,
        pixels,
    };
    if columns == 0
        || columns > MAX_COLUMNS
        || (pixels > 0 && columns > pixels)
        || (pixels == 0 && columns != 1)
    {
        return Err(codec_err(format!("bad column count {columns} for {pixels} pixels")));
    }
    let body_len = g.body_len();
    if flags & FLAG_SWAP_PAIRS != 0 && !body_len.is_multiple_of(2) {
        return Err(codec_err("swapped pairs in a body of odd length"));
    }
    if rest_raw != logical_len - body_len {
        return Err(codec_err("rest has the wrong length"));
    }
    let mut infos = Vec::with_capacity(channels);
    for ch in 0..channels {
        let (lo, hi, count) = (r.i32()?, r.i32()?, r.u32()? as usize);
        let (min, max) = g.limits(ch);
        if lo > hi || lo < min || hi > max || count == 1 || count as u64 > (hi as i64 - lo as i64 + 1) as u64
        {
            return Err(codec_err(format!("bad value range [{lo}, {hi}] ({count} values) for channel {ch}")));
        }
        infos.push((lo, hi, count));
    }
    // Value tables: `count` <= hi - lo + 1 <= 2^18, so the allocation is bounded.
    let infos = infos
        .into_iter()
        .enumerate()
        .map(|(ch, (lo, hi, count))| {
            let mut values = Vec::with_capacity(count);
            if count > 0 {
                let mut v = lo;
                values.push(v);
                for _ in 1..count {
                    let gap = r.varint()?;
                    v = match (v as i64).checked_add(gap as i64 + 1) {
                        Some(x) if x <= hi as i64 => x as i32,
                        _ => return Err(codec_err(format!("bad value table for channel {ch}"))),
                    };
                    values.push(v);
                }
                if v != hi {
                    return Err(codec_err(format!(
                        "value table of channel {ch} does not end at its highest value"
                    )));
                }
            }
            Ok(ChanInfo { lo, hi, values })
        })
        .collect::<Result<Vec<_>>>()?;
    let payload = &body[r.pos..];
    let sizes = &stream_lens[..streams];
    if sizes.iter().try_fold(rest_stored, |a, &b| a.checked_add(b)) != Some(payload.len()) {
        return Err(codec_err("section lengths do not cover the payload"));
    }
    if rest_method == METHOD_STORED && rest_stored != rest_raw {
        return Err(codec_err("stored rest length mismatch"));
    }
    if tabled {
        if (pixels == 0) != (table_raw == 0) || table_raw > MAX_TABLE_SECTION {
            return Err(codec_err(format!("bad table section length {table_raw}")));
        }
        if pixels == 0 && stream_lens.iter().any(|&l| l != 0) {
            return Err(codec_err("pixel streams without pixels"));
        }
        if table_method == METHOD_STORED && stream_lens[0] != table_raw {
            return Err(codec_err("stored table section length mismatch"));
        }
    }
    let (rest_bytes, mut rest) = payload.split_at(rest_stored);
    let mut sections = [&[][..]; 3];
    for (sec, &l) in sections.iter_mut().zip(sizes) {
        (*sec, rest) = rest.split_at(l);
    }

    out.truncate(logical_len);
    out.resize(logical_len, 0);
    // Rest.
    let rest_plain = decompress(rest_method, rest_bytes, rest_raw, "rest")?;
    out[..off].copy_from_slice(&rest_plain[..off]);
    out[off + body_len..].copy_from_slice(&rest_plain[off..]);

    // Pixels.
    if pixels > 0 {
        let body = &mut out[off..off + body_len];
        if version == VERSION_1 {
            decode_pixels(sections[0], sections[1], &g, &infos, body)?;
        } else {
            let tables = decompress(table_method, sections[0], table_raw, "table section")?;
            let streams = (&tables[..], sections[1], sections[2]);
            let split = version >= VERSION_6;
            match rans_states(version) {
                2 => decode_pixels_rans::<2>(streams, &g, &infos, split, body)?,
                4 => decode_pixels_rans::<4>(streams, &g, &infos, split, body)?,
                _ => decode_pixels_rans::<32>(streams, &g, &infos, split, body)?,
            }
        }
        if flags & FLAG_SWAP_PAIRS != 0 {
            body.chunks_exact_mut(2).for_each(|p| p.swap(0, 1));
        }
    }
    match check {
        Some(want) if xxh3_64(out) != want => {
            Err(codec_err("decoded bytes differ from their stored checksum"))
        }
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

thread_local! {
    /// A zstd decompression context per thread: creating one per section cost more than
    /// decompressing a small object's rest.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A section as stored (borrowed) or decompressed to exactly `raw_len` bytes.
fn decompress<'a>(
    method: u8,
    stored: &'a [u8],
    raw_len: usize,
    what: &str,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    if method == METHOD_STORED {
        return Ok(stored.into());
    }
    let mut buf = vec![0u8; raw_len];
    let n = DCTX
        .with(|d| {
            let mut d = d.borrow_mut();
            let d = match &mut *d {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new()?),
            };
            d.decompress_to_buffer(stored, &mut buf[..])
        })
        .map_err(|e| codec_err(format!("zstd: {e}")))?;
    if n != raw_len {
        return Err(codec_err(format!("{what} decompressed to {n} bytes, expected {raw_len}")));
    }
    Ok(buf.into())
}

fn decode_pixels(ac: &[u8], raw: &[u8], g: &Geometry, infos: &[ChanInfo], out: &mut [u8]) -> Result<()> {
    let mut io = Decoder { rc: RangeDecoder::new(ac), bits: BitReader::new(raw) };
    let mut chans: Vec<Channel> = infos.iter().map(|c| Channel::new(c.model_range(), g.columns)).collect();
    let row_bytes = g.columns * g.pixel_bytes();
    let mut writer = RowWriter::new(g);
    for (r, row) in out.chunks_mut(row_bytes).enumerate() {
        let w = row.len() / g.pixel_bytes();
        if !code_row(&mut io, &mut chans, r, w) {
            return Err(codec_err(format!("corrupt pixel stream (row {r})")));
        }
        writer.write::<false>(chans.iter().map(|c| &c.up[PAD..PAD + w]), infos, g, row);
    }
    if io.rc.overrun() || io.bits.overrun() {
        return Err(codec_err("pixel stream is truncated"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The model.

/// Padding of the row buffers on each side.
const PAD: usize = 2;
/// Fractional bits of predictions.
const PB: u32 = 3;
/// Quantised error contexts.
const NQ: usize = 40;
/// Bit lengths of residuals are below this (16-bit channels after the colour transform: 17).
const MAX_K: usize = 32;
/// Predictors blended, and their weights at zero error.
const NP: usize = 5;
const MAXW: [f32; NP] = [13.0, 12.0, 12.0, 12.0, 12.0];
/// Fractional bits of the blend's weights.
const WB: u32 = 22;

/// Adaptive probability of a 0 bit (16-bit), with a use count that sets its adaptation rate:
/// a shift of 1, 2, 2, 3, 3, 3, 3, 4... (about 1/(n + 1.5)) up to 6. A shift update never
/// reaches 0 or 65536, so no clamp is needed.
#[derive(Clone, Copy)]
struct Prob {
    p: u16,
    n: u16,
}

/// Adaptation shift by use count: the bit length of the count, at most 6.
static SHIFT: [u8; 64] = {
    let mut t = [6u8; 64];
    let mut n = 0;
    while n < 32 {
        t[n] = (32 - (n as u32).leading_zeros()) as u8;
        n += 1;
    }
    t
};
const COUNT_MAX: u16 = 32;

impl Prob {
    const NEW: Prob = Prob { p: 1 << 15, n: 1 };

    #[inline(always)]
    fn update(&mut self, bit: u32) {
        let shift = SHIFT[(self.n & 63) as usize] as u32;
        let p = self.p as u32;
        // bit 0: p += (65536 - p) >> shift; bit 1: p -= p >> shift (branch-free).
        let mask = 0u32.wrapping_sub(bit);
        let up = (65536 - p) >> shift;
        let down = p >> shift;
        self.p = (p + (up & !mask)).wrapping_sub(down & mask) as u16;
        self.n += (self.n < COUNT_MAX) as u16;
    }
}

/// Bit-level I/O shared by the encoder and the decoder, so the model is written once.
trait Io {
    const ENC: bool;
    /// Codes `bit` (encoder) or decodes one (decoder) with probability `p`, then adapts it.
    fn bit(&mut self, p: &mut Prob, bit: u32) -> u32;
    /// Codes the `n` (< 32) low bits of `v` raw, or reads them.
    fn raw(&mut self, n: u32, v: u32) -> u32;
}

#[cfg(test)]
struct Encoder {
    rc: RangeEncoder,
    bits: BitWriter,
}

#[cfg(test)]
impl Io for Encoder {
    const ENC: bool = true;
    #[inline(always)]
    fn bit(&mut self, p: &mut Prob, bit: u32) -> u32 {
        self.rc.encode(bit, p.p as u32);
        p.update(bit);
        bit
    }
    #[inline(always)]
    fn raw(&mut self, n: u32, v: u32) -> u32 {
        self.bits.put(n, v);
        v
    }
}

struct Decoder<'a> {
    rc: RangeDecoder<'a>,
    bits: BitReader<'a>,
}

impl Io for Decoder<'_> {
    const ENC: bool = false;
    #[inline(always)]
    fn bit(&mut self, p: &mut Prob, _: u32) -> u32 {
        let bit = self.rc.decode(p.p as u32);
        p.update(bit);
        bit
    }
    #[inline(always)]
    fn raw(&mut self, n: u32, _: u32) -> u32 {
        self.bits.get(n)
    }
}

/// A channel's adaptive state, per context `q`.
struct Model {
    /// Running average of the residual bit length k (1/256 units).
    kavg: [u32; NQ],
    /// Steps of k: [0] "k < j" at j = k0, [1] "k < j" going down, [2] "k > j" going up.
    kprob: [[[Prob; MAX_K]; 3]; NQ],
    sign: [[Prob; 4]; NQ],
    /// The bit below the leading one of |residual|, by k.
    mant: [[Prob; MAX_K]; NQ],
    /// Decaying error sums of the blend and of MED, per context / 4.
    sel: [[u32; 2]; 16],
}

/// One channel's rows and model.
struct Channel {
    lo: i32,
    hi: i32,
    /// The largest bit length of a residual.
    kmax: u32,
    /// Values of the current row and the one above, padded by [`PAD`] on each side.
    cur: Vec<i32>,
    up: Vec<i32>,
    /// Signed error of the blended prediction (1/8 units), current row and the one above.
    te_cur: Vec<i32>,
    te_up: Vec<i32>,
    /// Absolute errors of each predictor, current row and the one above.
    pe_cur: [Vec<i32>; NP],
    pe_up: [Vec<i32>; NP],
    /// Per column of the current row (unpadded): each predictor's weight in the blend, in
    /// 2^-24 units, and the scratch they are computed in.
    wt: [Vec<i32>; NP],
    inv: [Vec<f32>; NP],
    /// |residual| of the current row, for the channels after it.
    mag: Vec<u32>,
    m: Box<Model>,
}

impl Channel {
    fn new((lo, hi): (i32, i32), columns: usize) -> Channel {
        let span = (hi - lo) as u32;
        let kmax = 32 - span.leading_zeros();
        let width = columns + 2 * PAD;
        Channel {
            lo,
            hi,
            kmax,
            cur: vec![0; width],
            up: vec![0; width],
            te_cur: vec![0; width],
            te_up: vec![0; width],
            pe_cur: std::array::from_fn(|_| vec![0; width]),
            pe_up: std::array::from_fn(|_| vec![0; width]),
            wt: std::array::from_fn(|_| vec![0; columns]),
            inv: std::array::from_fn(|_| vec![0.0; columns]),
            mag: vec![0; width],
            m: Box::new(Model {
                kavg: [0; NQ],
                kprob: [[[Prob::NEW; MAX_K]; 3]; NQ],
                sign: [[Prob::NEW; 4]; NQ],
                mant: [[Prob::NEW; MAX_K]; NQ],
                sel: [[0; 2]; 16],
            }),
        }
    }
}

/// Half-octave quantisation: 0, 1, 2, 3, 4-5, 6-7, 8-11, 12-15, ...
#[inline(always)]
fn qlog(a: u32) -> usize {
    if a < 4 {
        return a as usize;
    }
    let b = 31 - a.leading_zeros();
    let q = 2 * b as usize + ((a >> (b - 1)) & 1) as usize;
    q.min(NQ - 1)
}

/// Each predictor's weight in the blend, for the `w` columns of a row: the inverse of its
/// errors in the row above at NWW, NW, N, NE and NEE, normalised to a sum of about 2^22
/// ([`WB`] bits). Single-precision IEEE arithmetic (exactly rounded, no fused multiply-add),
/// so every platform computes the same weights; the conversion to integers adds 2^23 and
/// takes the mantissa bits (round to nearest even).
fn blend_weights(pe_up: &[Vec<i32>; NP], inv: &mut [Vec<f32>; NP], wt: &mut [Vec<i32>; NP], w: usize) {
    for k in 0..NP {
        let pe = &pe_up[k][..w + 2 * PAD];
        let inv = &mut inv[k][..w];
        let (a, b, c, d, e) = (&pe[..w], &pe[1..w + 1], &pe[2..w + 2], &pe[3..w + 3], &pe[4..w + 4]);
        for j in 0..w {
            let sum = a[j] + b[j] + c[j] + d[j] + e[j];
            inv[j] = MAXW[k] / (sum as f32 + 1.0);
        }
    }
    const MAGIC: f32 = 8_388_608.0;
    let [i0, i1, i2, i3, i4] = inv;
    let (i0, i1, i2, i3, i4) = (&i0[..w], &i1[..w], &i2[..w], &i3[..w], &i4[..w]);
    let [w0, w1, w2, w3, w4] = wt;
    let (w0, w1, w2, w3, w4) = (&mut w0[..w], &mut w1[..w], &mut w2[..w], &mut w3[..w], &mut w4[..w]);
    for j in 0..w {
        let scale = (1u32 << WB) as f32 / ((((i0[j] + i1[j]) + i2[j]) + i3[j]) + i4[j]);
        let int = |x: f32| ((x * scale + MAGIC).to_bits() - MAGIC.to_bits()) as i32;
        w0[j] = int(i0[j]);
        w1[j] = int(i1[j]);
        w2[j] = int(i2[j]);
        w3[j] = int(i3[j]);
        w4[j] = int(i4[j]);
    }
}

/// Codes (or decodes into `cur`) one row of `w` pixels of every channel. Returns false when a
/// decoded value is out of its channel's range.
fn code_row<I: Io>(io: &mut I, chans: &mut [Channel], r: usize, w: usize) -> bool {
    let mut ok = true;
    for ch in 0..chans.len() {
        let (first, rest) = chans.split_at_mut(ch);
        let base = first.first().map(|c| &c.mag[..]);
        let c = &mut rest[0];
        ok &= if r == 0 {
            code_channel_row::<I, true>(io, c, base, w)
        } else {
            code_channel_row::<I, false>(io, c, base, w)
        };
    }
    for c in chans.iter_mut() {
        std::mem::swap(&mut c.up, &mut c.cur);
        std::mem::swap(&mut c.te_up, &mut c.te_cur);
        std::mem::swap(&mut c.pe_up, &mut c.pe_cur);
    }
    ok
}

#[inline(always)]
fn code_channel_row<I: Io, const FIRST: bool>(
    io: &mut I,
    s: &mut Channel,
    base: Option<&[u32]>,
    w: usize,
) -> bool {
    let width = s.cur.len() - 2 * PAD;
    assert!(w <= width && s.up.len() == width + 2 * PAD && s.te_cur.len() == s.up.len());
    assert!(s.te_up.len() == s.up.len() && s.mag.len() == s.up.len());
    assert!(base.is_none_or(|b| b.len() == s.up.len()));
    if FIRST {
        let mid = s.lo + (s.hi - s.lo) / 2;
        s.cur[PAD - 2..PAD].fill(mid);
        s.te_up.fill(0);
        for pe in s.pe_up.iter_mut() {
            pe.fill(0);
        }
    } else {
        // Left of the row: W = WW = NW = N; right of the row above: NE = N.
        let n0 = s.up[PAD];
        s.cur[PAD - 2..PAD].fill(n0);
        s.up[PAD - 1] = n0;
        s.up[PAD + width] = s.up[PAD + width - 1];
        s.te_up[PAD - 1] = s.te_up[PAD];
        s.te_up[PAD + width] = s.te_up[PAD + width - 1];
        for pe in s.pe_up.iter_mut() {
            let (first, last) = (pe[PAD], pe[PAD + width - 1]);
            pe[..PAD].fill(first);
            pe[PAD + width..].fill(last);
        }
    }
    blend_weights(&s.pe_up, &mut s.inv, &mut s.wt, w);
    s.te_cur[PAD - 1] = 0;
    let (lo, hi) = (s.lo, s.hi);
    let kmax = s.kmax;
    let m = &mut *s.m;
    // Every row buffer cut to the columns the loop reads, so that indexing needs no checks.
    let n_ = PAD + w + 1;
    let (cur, up, te_cur, te_up, mag) =
        (&mut s.cur[..n_], &s.up[..n_], &mut s.te_cur[..n_], &s.te_up[..n_], &mut s.mag[..n_]);
    let base = base.map(|b| &b[..n_]);
    let [pe0, pe1, pe2, pe3, pe4] = &mut s.pe_cur;
    let pe = [&mut pe0[..n_], &mut pe1[..n_], &mut pe2[..n_], &mut pe3[..n_], &mut pe4[..n_]];
    let [w0, w1, w2, w3, w4] = &s.wt;
    let wt = [&w0[..w], &w1[..w], &w2[..w], &w3[..w], &w4[..w]];
    let mut bad = false;
    for i in PAD..PAD + w {
        let j = i - PAD;
        let wv = cur[i - 1];
        let (n, nw, ne) = if FIRST { (wv, wv, wv) } else { (up[i], up[i - 1], up[i + 1]) };
        let te_w = te_cur[i - 1];
        let (te_n, te_nw, te_ne) = (te_up[i], te_up[i - 1], te_up[i + 1]);

        // Context: the size of the errors made around (and, for colour channels 1 and 2, of
        // channel 0's residual at this pixel).
        let mut a = te_w.unsigned_abs() + te_n.unsigned_abs() + te_nw.unsigned_abs() + te_ne.unsigned_abs();
        if let Some(b) = base {
            a += b[i] << (PB + 1);
        }
        let q = qlog(a >> 2);

        // Sub-predictions, in 1/8 units.
        let (n8, w8, ne8) = (n << PB, wv << PB, ne << PB);
        let sum_wn = te_n + te_w;
        let (mn, mx) = (wv.min(n), wv.max(n));
        let med = if nw >= mx {
            mn
        } else if nw <= mn {
            mx
        } else {
            wv + n - nw
        } << PB;
        let p: [i32; NP] = [
            w8 + ne8 - n8,
            n8 - (((sum_wn + te_ne) * 16) >> 5),
            w8 - (((sum_wn + te_nw) * 10) >> 5),
            n8 - ((te_nw * 7 + te_n * 7 + te_ne * 7) >> 5),
            med,
        ];
        let mut acc: i64 = 1 << (WB - 1);
        for k in 0..NP {
            acc += p[k] as i64 * wt[k][j] as i64;
        }
        let mut blend = (acc >> WB) as i32;
        if ((te_n ^ te_w) | (te_n ^ te_ne)) <= 0 {
            blend = blend.max(mn.min(ne) << PB).min(mx.max(ne) << PB);
        }
        // MED alone where it has recently done better in this kind of context.
        let sel = &mut m.sel[(q >> 2) & 15];
        let pred = if sel[1] < sel[0] { med } else { blend };
        let pv = ((pred + (1 << (PB - 1))) >> PB).max(lo).min(hi);

        // Residual.
        let e_in = if I::ENC { cur[i] - pv } else { 0 };
        let mag_in = e_in.unsigned_abs();
        let k_in = 32 - mag_in.leading_zeros();
        // k: from the context's usual bit length k0, "k < k0?", then unary steps down or up.
        let kq = &mut m.kavg[q];
        let k0 = ((*kq + 128) >> 8).min(kmax);
        let kp = &mut m.kprob[q];
        let mut k;
        if k0 > 0 && io.bit(&mut kp[0][k0 as usize & (MAX_K - 1)], (k_in < k0) as u32) == 1 {
            k = k0 - 1;
            while k > 0 && io.bit(&mut kp[1][k as usize & (MAX_K - 1)], (k_in < k) as u32) == 1 {
                k -= 1;
            }
        } else {
            k = k0;
            while k < kmax && io.bit(&mut kp[2][k as usize & (MAX_K - 1)], (k_in > k) as u32) == 1 {
                k += 1;
            }
        }
        *kq = (*kq as i32 + (((k << 8) as i32 - *kq as i32) >> 4)) as u32;
        let mut x = pv;
        if k > 0 {
            let sctx = ((te_w + te_n).signum() + 1) as usize & 3;
            let neg = io.bit(&mut m.sign[q][sctx], (e_in < 0) as u32);
            let mut mag = 1u32 << (k - 1);
            if k >= 2 {
                let top = io.bit(&mut m.mant[q][k as usize & (MAX_K - 1)], (mag_in >> (k - 2)) & 1);
                mag |= top << (k - 2);
                if k >= 3 {
                    mag |= io.raw(k - 2, mag_in & ((1 << (k - 2)) - 1));
                }
            }
            x = if neg == 1 { pv - mag as i32 } else { pv + mag as i32 };
        }
        if !I::ENC {
            if x < lo || x > hi {
                bad = true;
                x = x.max(lo).min(hi);
            }
            cur[i] = x;
        }
        mag[i] = (x - pv).unsigned_abs();

        // Errors.
        let x8 = x << PB;
        sel[0] = sel[0] - (sel[0] >> 6) + (blend - x8).unsigned_abs();
        sel[1] = sel[1] - (sel[1] >> 6) + (med - x8).unsigned_abs();
        te_cur[i] = blend - x8;
        for k in 0..NP {
            pe[k][i] = ((p[k] - x8).abs() + 3) >> PB;
        }
    }
    !bad
}

// ---------------------------------------------------------------------------------------------
// Versions 2 and 3: MED prediction, static per-context tables, rANS.

/// Token alphabet: zigzagged residuals below 16 as themselves, larger ones as their bit length
/// and the two bits below the leading one (residuals of 16-bit channels after the colour
/// transform stay below 2^18: tokens up to 71).
const NTOK: usize = 72;
/// Frequencies of a table sum to 2^TAB_BITS.
const TAB_BITS: u32 = 11;
const TAB_SIZE: usize = 1 << TAB_BITS;
/// rANS state: in [RANS_L, 2^32), renormalised by 16-bit words.
const RANS_L: u32 = 1 << 16;
/// Error-size levels and gradient levels of a channel's contexts.
const NQ2: usize = 32;
const NG: usize = 8;
const CTX_PER_CHANNEL: usize = NQ2 * NG;
const MAX_TABLES: usize = 256;
/// Frequency codes: 0 absent, c > 0 a weight of (4 + (c - 1) % 4) << ((c - 1) / 4).
const MAX_CODE: u8 = 52;
/// Largest table section: table count, context map, tables.
const MAX_TABLE_SECTION: usize = 2 + MAX_CHANNELS * CTX_PER_CHANNEL + MAX_TABLES * (1 + NTOK);

/// Per token: the smallest zigzagged residual it stands for, and its raw bits.
static TOKENS: [(u32, u32); NTOK] = {
    let mut t = [(0u32, 0u32); NTOK];
    let mut i = 0;
    while i < NTOK {
        t[i] = if i < 16 {
            (i as u32, 0)
        } else {
            let n = (i as u32 - 16) / 4 + 4;
            ((4 + (i as u32 - 16) % 4) << (n - 2), n - 2)
        };
        i += 1;
    }
    t
};

/// Token, raw-bit count and raw bits of a zigzagged residual.
#[inline(always)]
fn tokenize(u: u32) -> (u32, u32, u32) {
    if u < 16 {
        (u, 0, 0)
    } else {
        let n = 31 - u.leading_zeros();
        (16 + (n - 4) * 4 + ((u >> (n - 2)) & 3), n - 2, u & ((1 << (n - 2)) - 1))
    }
}

/// A channel's context (of [`CTX_PER_CHANNEL`]): the size of the residuals around, `a`
/// (< 2^23), and of the local gradient, `g` (< 2^23), quantised: half-octaves of a + 2 (0, 1,
/// 2-3, 4-5, 6-9, 10-13, 14-21, ...) and the bit length of g. Both are read off the exponent
/// and first mantissa bit of the exactly converted f32: no branches, and SIMD does them.
#[inline(always)]
fn context(a: u32, g: u32) -> usize {
    let q = ((((a + 2) as i32 as f32).to_bits() >> 22) as i32 - 256).min(NQ2 as i32 - 1);
    let gq = (((g as i32 as f32).to_bits() >> 23) as i32 - 126).clamp(0, NG as i32 - 1);
    (q * NG as i32 + gq) as usize
}

/// One channel's rows, padded: values by one column on each side (current row, the two rows
/// above), |residual|s by two (likewise); and the current row's contexts and residuals.
struct MedChannel {
    lo: i32,
    hi: i32,
    columns: usize,
    /// Rows cut into [`SEGMENTS`] (version 6).
    split: bool,
    cur: Vec<i32>,
    up: Vec<i32>,
    up2: Vec<i32>,
    mcur: Vec<u32>,
    mup: Vec<u32>,
    mup2: Vec<u32>,
    ctx: Vec<u16>,
    res: Vec<i32>,
}

impl MedChannel {
    fn new((lo, hi): (i32, i32), columns: usize, split: bool) -> MedChannel {
        let (v, m) = (columns + 2, columns + 4);
        MedChannel {
            lo,
            hi,
            columns,
            split,
            cur: vec![0; v],
            up: vec![0; v],
            up2: vec![0; v],
            mcur: vec![0; m],
            mup: vec![0; m],
            mup2: vec![0; m],
            ctx: vec![0; columns],
            res: vec![0; columns],
        }
    }

    /// The contexts of the row's `w` samples, from the rows above (and the base channel's
    /// |residual|s of this row, `base`, padded as `mcur`): none depends on the row itself, so
    /// they are computed ahead, in a loop the compiler vectorises, and the decoder's loops
    /// carry no context dependency from one sample to the next.
    #[inline(always)]
    fn contexts(&mut self, base: &[u32], r: usize, ctx0: usize, w: usize) {
        let columns = self.columns;
        // Beyond the ends of the row above: its end values.
        self.up[0] = self.up[1];
        self.up[columns + 1] = self.up[columns];
        let (first, last) = (self.mup[2], self.mup[columns + 1]);
        self.mup[..2].fill(first);
        self.mup[columns + 2..].fill(last);
        let (ctx, base) = (&mut self.ctx[..w], &base[2..w + 2]);
        if r == 0 {
            for (c, &b) in ctx.iter_mut().zip(base) {
                *c = (ctx0 as u32 + context(4 * b, 0) as u32) as u16;
            }
            return;
        }
        // The row above the first: NN = N.
        let nn_row = if r >= 2 { &self.up2[1..w + 1] } else { &self.up[1..w + 1] };
        let (nw, n, ne) = (&self.up[..w], &self.up[1..w + 1], &self.up[2..w + 2]);
        let m = &self.mup[..w + 4];
        let (mnww, mnw, mn, mne, mnee) = (&m[..w], &m[1..w + 1], &m[2..w + 2], &m[3..w + 3], &m[4..w + 4]);
        let mnn = &self.mup2[2..w + 2];
        for i in 0..w {
            let a = mnww[i] + mnee[i] + 2 * (mnw[i] + mn[i] + mne[i] + mnn[i] + 2 * base[i]);
            let g = (n[i] - nw[i]).unsigned_abs()
                + (ne[i] - n[i]).unsigned_abs()
                + (n[i] - nn_row[i]).unsigned_abs();
            ctx[i] = (ctx0 as u32 + context(a, g) as u32) as u16;
        }
    }

    /// After the decoder's loop: the row's residual magnitudes (the next rows' contexts need
    /// them), from its values and their predictions, which are known now, so that the loop
    /// vectorises; and whether every value is in range (else the stream is corrupt). `res`:
    /// the row's residuals where the decoder kept them (its passes): their magnitudes are
    /// those, `x - pv` being `res` exactly (wrapping), with no prediction to compute again.
    #[inline(always)]
    fn check_row(&mut self, r: usize, w: usize, res: Option<&[i32]>) -> bool {
        let (lo, span) = (self.lo, (self.hi - self.lo) as u32);
        if let Some(res) = res {
            let (cur, mcur) = (&self.cur[1..w + 1], &mut self.mcur[2..w + 2]);
            let mut bad = 0u32;
            for ((m, &e), &x) in mcur.iter_mut().zip(&res[..w]).zip(cur) {
                *m = e.unsigned_abs();
                bad |= (x.wrapping_sub(lo) as u32 > span) as u32;
            }
            return bad == 0;
        }
        let (cur, up, mcur) = (&self.cur[..w + 1], &self.up[..w + 1], &mut self.mcur[2..w + 2]);
        let mut bad = 0u32;
        for i in 0..w {
            let (wv, x) = (cur[i], cur[i + 1]);
            let pv = if r == 0 {
                wv
            } else {
                let (n, nw) = (up[i + 1], up[i]);
                wv.wrapping_add(n).wrapping_sub(nw).max(wv.min(n)).min(wv.max(n))
            };
            mcur[i] = x.wrapping_sub(pv).unsigned_abs();
            bad |= (x.wrapping_sub(lo) as u32 > span) as u32;
        }
        if self.split {
            // The segments' first pixels, predicted as the row's first (`cur[0]` is its W).
            for &s in &segment_starts(w)[1..SEGMENTS] {
                let pv = if r == 0 { cur[0] } else { up[s + 1] };
                mcur[s] = cur[s + 1].wrapping_sub(pv).unsigned_abs();
            }
        }
        bad == 0
    }

    /// The encoder's residuals of the row (its values are in `cur`).
    fn residuals(&mut self, r: usize, w: usize) {
        self.cur[0] = if r == 0 { self.lo + (self.hi - self.lo) / 2 } else { self.up[1] };
        self.up[0] = self.up[1];
        let (cur, res, mcur) = (&self.cur[..w + 1], &mut self.res[..w], &mut self.mcur[2..w + 2]);
        for i in 0..w {
            let (wv, x) = (cur[i], cur[i + 1]);
            let pv = if r == 0 {
                wv
            } else {
                let (n, nw) = (self.up[i + 1], self.up[i]);
                (wv + n - nw).max(wv.min(n)).min(wv.max(n))
            };
            res[i] = x - pv;
            mcur[i] = res[i].unsigned_abs();
        }
        if self.split {
            // Version 6: each segment's first pixel as the row's first, so that the decoder's
            // chains of values along the row are independent.
            for &s in &segment_starts(w)[1..SEGMENTS] {
                let pv = if r == 0 { cur[0] } else { self.up[s + 1] };
                res[s] = cur[s + 1] - pv;
                mcur[s] = res[s].unsigned_abs();
            }
        }
    }

    fn next_row(&mut self) {
        std::mem::swap(&mut self.up2, &mut self.up);
        std::mem::swap(&mut self.up, &mut self.cur);
        std::mem::swap(&mut self.mup2, &mut self.mup);
        std::mem::swap(&mut self.mup, &mut self.mcur);
    }
}

/// The encoder's first pass: tokens (with their contexts) and their counts; raw bits written.
struct TokenSink {
    /// Context << 8 | token, per sample in coding order.
    toks: Vec<u32>,
    /// Counts by context and token.
    hist: Vec<u32>,
    bits: BitWriter,
}

impl TokenSink {
    fn row(&mut self, ctx: &[u16], res: &[i32]) {
        for (&c, &e) in ctx.iter().zip(res) {
            let (t, nb, v) = tokenize(((e << 1) ^ (e >> 31)) as u32);
            self.toks.push((c as u32) << 8 | t);
            self.hist[c as usize * NTOK + t as usize] += 1;
            self.bits.put(nb, v);
        }
    }
}

/// The decoder of versions 2 to 6: `N` rANS states taken in turn (the first sample's first;
/// version 2 has two, versions 3 and 4 four, versions 5 and 6 32), so that `N` dependency
/// chains run side by side.
/// Version 5 decodes a row in three passes: its tokens (its contexts come from the rows above,
/// so they are known before it; on x86-64-v3 8 states a vector, 4 vectors side by side), their
/// raw bits (a running sum of bit counts; on x86-64-v3 8 samples a step), then the MED
/// reconstruction (the chain of values along the row; version 6's 8 chains, [`med_split`]).
/// Versions 2 to 4, and versions 5 and 6 without
/// x86-64-v3, take a sample's three steps in one loop ([`Self::fused`]): with 4 states a token
/// pass is bound by their chains, and scalar passes decoded version 5 ~20 % slower than it.
struct TokenSource<'a, const N: usize> {
    x: [u32; N],
    /// The rANS stream's words, then `N` zeros.
    words: &'a [u16],
    pos: usize,
    tables: &'a Tables,
    /// The raw-bit stream, then [`RAW_PAD`] zero bytes: every read is one unaligned load.
    raw: &'a [u8],
    bitpos: usize,
    /// The row's tokens, then its residuals (a row at most: `columns` samples).
    toks: Vec<u8>,
    res: Vec<i32>,
    /// Rows cut into [`SEGMENTS`] (version 6).
    split: bool,
}

/// Zero bytes after the raw-bit stream: a read at its end (clamped there) stays inside; the
/// vector pass reads 16 bytes (8 fields of at most 15 bits).
const RAW_PAD: usize = 32;

/// Per token: the smallest zigzagged residual it stands for, its raw-bit count and their mask,
/// padded to 128 entries so that a 7-bit token indexes it without a bounds check.
static TOKEN_BITS: [(u32, u32, u32); 128] = {
    let mut t = [(0u32, 0u32, 0u32); 128];
    let mut i = 0;
    while i < NTOK {
        let (base, nb) = TOKENS[i];
        t[i] = (base, nb, (1 << nb) - 1);
        i += 1;
    }
    t
};

impl<const N: usize> TokenSource<'_, N> {
    /// Decodes a row of `w = ctx.len()` samples of one channel into `cur[1..=w]` (`cur[0]`: the
    /// value left of the row; `up`: the row above, padded likewise). Wrapping arithmetic: a
    /// corrupt stream gives garbage, never an overflow; [`MedChannel::check_row`] finds it.
    /// Returns whether the row's residuals are left in `self.res[..w]` (the passes keep them,
    /// the fused loop does not).
    #[inline(always)]
    fn row<const FIRST: bool, const V3: bool>(&mut self, ctx: &[u16], up: &[i32], cur: &mut [i32]) -> bool {
        if N < 8 || !V3 {
            // Versions 2 to 4: in passes, their few states' chain bounds the token pass; and
            // without the vector passes, one loop is the faster (see the type's comment).
            if self.split {
                self.fused::<FIRST, true>(ctx, up, cur)
            } else {
                self.fused::<FIRST, false>(ctx, up, cur)
            }
            return false;
        }
        let w = ctx.len();
        #[cfg(target_arch = "x86_64")]
        let from = if V3 {
            // SAFETY: `V3` is set only where the CPU has x86-64-v3's features.
            unsafe { self.tokens_avx2(ctx) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let from = 0;
        self.tokens(ctx, from);
        #[cfg(target_arch = "x86_64")]
        if V3 {
            // SAFETY: `V3` is set only where the CPU has AVX2 (see `decode_pixels_rans`).
            unsafe { self.residuals_avx2(w) };
        } else {
            self.residuals(0, w);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.residuals(0, w);
        if self.split {
            med_split::<FIRST, V3>(&self.res[..w], up, cur);
        } else {
            med::<FIRST>(&self.res[..w], up, cur);
        }
        true
    }

    /// [`Self::row`] for 2 or 4 states (versions 2 to 4), and for every version on CPUs without
    /// x86-64-v3: a sample's token, raw bits and MED value in one loop, so that the chain of values along the row overlaps the rANS chains
    /// (in passes each pass waits on its own chain, and the decode was ~7 % slower).
    #[inline(always)]
    fn fused<const FIRST: bool, const SPLIT: bool>(&mut self, ctx: &[u16], up: &[i32], cur: &mut [i32]) {
        let (mut x, mut pos, mut bitpos) = (self.x, self.pos, self.bitpos);
        let (words, raw, first) = (self.words, self.raw, &self.tables.first);
        let slots = &self.tables.slots[..];
        let raw_end = raw.len() - 8;
        let w = ctx.len();
        let (up, cur) = (&up[..w + 1], &mut cur[..w + 1]);
        let mut wv = cur[0];
        // Version 6: the next segment's start (then `w`), predicted as the row's first pixel.
        let (starts, row_first) = (segment_starts(w), cur[0]);
        let mut seg = 1;
        // One sample with state `x` (a macro: a closure is not always inlined, and its
        // captures then live in memory).
        macro_rules! step {
            ($i:expr, $x:expr) => {{
                let (i, x): (usize, &mut u32) = ($i, $x);
                let slot = *x & (TAB_SIZE as u32 - 1);
                let entry = slots[first[ctx[i] as usize & (MAX_CONTEXTS - 1)] as usize + slot as usize];
                let tok = (entry >> 24) as usize & 127;
                let next = (entry & 0xFFF) * (*x >> TAB_BITS) + ((entry >> 12) & 0x7FF);
                // Renormalisation is a coin toss for the branch predictor: a select instead (the
                // word is read either way; past the end, reads are zero and the final check fails).
                let word = words.get(pos).copied().unwrap_or(0) as u32;
                let need = next < RANS_L;
                *x = if need { (next << 16) | word } else { next };
                pos += need as usize;

                let (base, nb, mask) = TOKEN_BITS[tok];
                let at = (bitpos >> 3).min(raw_end);
                let bits = u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
                let u = base + ((bits >> (bitpos & 7)) as u32 & mask);
                bitpos += nb as usize;
                let e = (u >> 1) as i32 ^ -((u & 1) as i32);

                // MED (LOCO-I's median edge detector) as the median of W, N and W + N - NW: within
                // [min(W, N), max(W, N)], so in range, and without branches, which noise would make
                // random. The first row predicts W.
                let mut pv = if FIRST {
                    wv
                } else {
                    let (n, nw) = (up[i + 1], up[i]);
                    wv.wrapping_add(n).wrapping_sub(nw).max(wv.min(n)).min(wv.max(n))
                };
                if SPLIT && i == starts[seg] {
                    pv = if FIRST { row_first } else { up[i + 1] };
                    // Short rows repeat starts.
                    while starts[seg] == i {
                        seg += 1;
                    }
                }
                let v = pv.wrapping_add(e);
                cur[i + 1] = v;
                wv = v;
            }};
        }
        // N samples at a time, each with its own state (unrolled: the states stay in registers).
        let whole = w - w % N;
        for i in (0..whole).step_by(N) {
            for (j, x) in x.iter_mut().enumerate() {
                step!(i + j, x);
            }
        }
        for (j, x) in x[..w % N].iter_mut().enumerate() {
            step!(whole + j, x);
        }
        // The next row starts with the state after the last one used.
        x.rotate_left(w % N);
        (self.x, self.pos, self.bitpos) = (x, pos, bitpos);
    }

    /// The row's tokens from `from` on (a multiple of `N`: the states start with the first), by
    /// the `N` states in turn.
    #[inline(always)]
    fn tokens(&mut self, ctx: &[u16], from: usize) {
        let (mut x, mut pos) = (self.x, self.pos);
        let (words, first) = (self.words, &self.tables.first);
        // `words` ends with N zeros: a group's N words are one slice from `pos` (clamped there:
        // past the end of the stream every read is zero, and the final check fails).
        let last = words.len() - N;
        let slots = &self.tables.slots[..];
        let w = ctx.len();
        let toks = &mut self.toks[..w];
        // Samples `at..at + n` with states `x[..n]`: within a group the states take the next
        // words in turn, each at most one (a macro: a closure is not always inlined, and its
        // captures then live in memory).
        macro_rules! group {
            ($at:expr, $n:expr) => {{
                let (at, n): (usize, usize) = ($at, $n);
                let next: &[u16; N] = words[pos.min(last)..][..N].try_into().expect("N words");
                let mut k = 0;
                for (j, x) in x[..n].iter_mut().enumerate() {
                    let slot = *x & (TAB_SIZE as u32 - 1);
                    let entry =
                        slots[first[ctx[at + j] as usize & (MAX_CONTEXTS - 1)] as usize + slot as usize];
                    let tok = (entry >> 24) as u8;
                    let y = (entry & 0xFFF) * (*x >> TAB_BITS) + ((entry >> 12) & 0x7FF);
                    // Renormalisation is a coin toss for the branch predictor: a select instead.
                    let need = y < RANS_L;
                    *x = if need { (y << 16) | next[k & (N - 1)] as u32 } else { y };
                    k += need as usize;
                    toks[at + j] = tok;
                }
                pos += k;
            }};
        }
        // N samples at a time, each with its own state (unrolled: the states stay in registers).
        let whole = w - w % N;
        for i in (from..whole).step_by(N) {
            group!(i, N);
        }
        group!(whole, w % N);
        // The next row starts with the state after the last one used.
        x.rotate_left(w % N);
        (self.x, self.pos) = (x, pos);
    }

    /// The row's tokens in whole groups of `N` (a multiple of 8) samples, 8 states a vector;
    /// returns how many. Bit-exact with [`Self::tokens`]: the lanes that renormalise take the
    /// next words in lane order, as the states taken in turn do.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    fn tokens_avx2(&mut self, ctx: &[u16]) -> usize {
        use std::arch::x86_64::*;
        const VECS: usize = 4;
        assert!(N.is_multiple_of(8) && N / 8 <= VECS);
        let w = ctx.len();
        let whole = w - w % N;
        if whole == 0 {
            return 0;
        }
        let words = self.words;
        // `words` ends with N >= 8 zeros: 8 words from any `pos.min(last)` are inside.
        let last = words.len() - N;
        let mut pos = self.pos;
        let (slots, first) = (&self.tables.slots[..], &self.tables.first);
        // `read_tables` points every context at a table; the clamp keeps the gather inside anyway.
        let max_slot = _mm256_set1_epi32(slots.len() as i32 - 1);
        let slot_mask = _mm256_set1_epi32(TAB_SIZE as i32 - 1);
        let (f_mask, b_mask) = (_mm256_set1_epi32(0xFFF), _mm256_set1_epi32(0x7FF));
        // Byte 0 of each lane to the first 4 bytes of its half, the halves' to the first 8.
        let low_bytes = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1,
        );
        let halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
        let mut xs = [_mm256_setzero_si256(); VECS];
        for (v, x) in xs.iter_mut().zip(self.x.chunks_exact(8)) {
            // SAFETY: 8 u32s.
            *v = unsafe { _mm256_loadu_si256(x.as_ptr() as *const __m256i) };
        }
        let toks = &mut self.toks[..whole];
        // One vector of 8 states for samples `at..at + 8`; returns its new states (a macro: the
        // states of a group stay in registers, where a loop over an array of them kept them in
        // memory, a store and a load on each state's chain).
        macro_rules! step {
            ($x:expr, $at:expr) => {{
                let (x, at): (__m256i, usize) = ($x, $at);
                // The tables' starts by scalar loads: off the states' chain, and cheaper than a gather.
                let c: &[u16; 8] = ctx[at..at + 8].try_into().expect("8 contexts");
                let t: [u32; 8] = std::array::from_fn(|k| first[c[k] as usize & (MAX_CONTEXTS - 1)]);
                // SAFETY: 8 u32s.
                let t = unsafe { _mm256_loadu_si256(t.as_ptr() as *const __m256i) };
                let idx = _mm256_min_epu32(_mm256_add_epi32(t, _mm256_and_si256(x, slot_mask)), max_slot);
                // SAFETY: every index is below `slots.len()`.
                let e = unsafe { _mm256_i32gather_epi32::<4>(slots.as_ptr() as *const i32, idx) };
                let f = _mm256_and_si256(e, f_mask);
                let bias = _mm256_and_si256(_mm256_srli_epi32(e, 12), b_mask);
                let y = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(x, TAB_BITS as i32)), bias);
                let need = _mm256_cmpeq_epi32(_mm256_srli_epi32(y, 16), _mm256_setzero_si256());
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
                let p = pos.min(last);
                let next: &[u16; 8] = words[p..p + 8].try_into().expect("8 words");
                // SAFETY: 8 u16s.
                let next = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(next.as_ptr() as *const __m128i) });
                // SAFETY: 8 u32s.
                let perm = unsafe { _mm256_loadu_si256(RENORM_PERM[m].as_ptr() as *const __m256i) };
                let renorm =
                    _mm256_or_si256(_mm256_slli_epi32(y, 16), _mm256_permutevar8x32_epi32(next, perm));
                pos += m.count_ones() as usize;
                let t8 = _mm256_permutevar8x32_epi32(
                    _mm256_shuffle_epi8(_mm256_srli_epi32(e, 24), low_bytes),
                    halves,
                );
                let t8 = _mm_cvtsi128_si64(_mm256_castsi256_si128(t8)) as u64;
                toks[at..at + 8].copy_from_slice(&t8.to_le_bytes());
                _mm256_blendv_epi8(y, renorm, need)
            }};
        }
        if N == 32 {
            const { assert!(VECS == 4) };
            let [mut x0, mut x1, mut x2, mut x3] = xs;
            for g in (0..whole).step_by(N) {
                x0 = step!(x0, g);
                x1 = step!(x1, g + 8);
                x2 = step!(x2, g + 16);
                x3 = step!(x3, g + 24);
            }
            xs = [x0, x1, x2, x3];
        } else {
            for g in (0..whole).step_by(N) {
                for (j, x) in xs[..N / 8].iter_mut().enumerate() {
                    *x = step!(*x, g + 8 * j);
                }
            }
        }
        for (v, x) in xs.iter().zip(self.x.chunks_exact_mut(8)) {
            // SAFETY: 8 u32s.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr() as *mut __m256i, *v) };
        }
        self.pos = pos;
        whole
    }

    /// The residuals of the row's tokens `from..w`: their raw bits read, zigzag undone.
    #[inline(always)]
    fn residuals(&mut self, from: usize, w: usize) {
        let raw = self.raw;
        let raw_end = raw.len() - 8;
        let mut bitpos = self.bitpos;
        for (e, &tok) in self.res[from..w].iter_mut().zip(&self.toks[from..w]) {
            let (base, nb, mask) = TOKEN_BITS[tok as usize & 127];
            let at = (bitpos >> 3).min(raw_end);
            let bits = u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
            let u = base + ((bits >> (bitpos & 7)) as u32 & mask);
            bitpos += nb as usize;
            *e = (u >> 1) as i32 ^ -((u & 1) as i32);
        }
        self.bitpos = bitpos;
    }

    /// [`Self::residuals`] of the whole row, 8 samples a step: bit counts and bases from the
    /// tokens by arithmetic, the fields' offsets by a prefix sum, the fields out of the 16 bytes
    /// that hold them by a byte shuffle (a gather took ~3 cycles a sample on Zen 3).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn residuals_avx2(&mut self, w: usize) {
        use std::arch::x86_64::*;
        let raw = self.raw;
        // The last base a step may read from: it reads 16 bytes there.
        let raw_end = raw.len() - RAW_PAD;
        let spread = _mm256_set1_epi32(0x0101_0101);
        let window = _mm256_set1_epi32(0x0302_0100);
        let mut bitpos = self.bitpos;
        let whole = w - w % 8;
        let (toks, res) = (&self.toks[..whole], &mut self.res[..whole]);
        let c16 = _mm256_set1_epi32(16);
        let c2 = _mm256_set1_epi32(2);
        let c3 = _mm256_set1_epi32(3);
        let c4 = _mm256_set1_epi32(4);
        let c7 = _mm256_set1_epi32(7);
        let one = _mm256_set1_epi32(1);
        let c15 = _mm256_set1_epi32(15);
        let lane3 = _mm256_set1_epi32(3);
        for (t8, e8) in toks.chunks_exact(8).zip(res.chunks_exact_mut(8)) {
            let t8: [u8; 8] = t8.try_into().expect("8 tokens");
            let t = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(t8)));
            // Tokens are < NTOK (read_tables fills every slot with one): below 16 the residual
            // itself, no raw bits; above, (4 + t % 4) << nb with nb = (t - 16) / 4 + 2 raw bits.
            let big = _mm256_cmpgt_epi32(t, c15);
            let nb =
                _mm256_and_si256(big, _mm256_add_epi32(_mm256_srli_epi32(_mm256_sub_epi32(t, c16), 2), c2));
            let base_big = _mm256_sllv_epi32(_mm256_add_epi32(c4, _mm256_and_si256(t, c3)), nb);
            let base = _mm256_blendv_epi8(t, base_big, big);
            let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, nb), one);
            // Inclusive prefix sum of the bit counts, within each half then across.
            let mut s = _mm256_add_epi32(nb, _mm256_slli_si256(nb, 4));
            s = _mm256_add_epi32(s, _mm256_slli_si256(s, 8));
            let low = _mm256_permutevar8x32_epi32(s, lane3);
            s = _mm256_add_epi32(s, _mm256_permute2x128_si256(low, low, 0x08));
            let total = _mm256_extract_epi32(s, 7) as usize;
            // Bit offsets from the base byte: each field ends by bit 7 + 8 * 15 = 127, inside
            // the 16 bytes from it. Each lane takes the 4 bytes from its field's first (those
            // past the 16th are bytes from the start again: above the field, masked off).
            let at = (bitpos >> 3).min(raw_end);
            let off = _mm256_add_epi32(_mm256_sub_epi32(s, nb), _mm256_set1_epi32((bitpos & 7) as i32));
            let byte = _mm256_srli_epi32(off, 3);
            let src: &[u8; 16] = raw[at..at + 16].try_into().expect("16 bytes");
            // SAFETY: 16 bytes.
            let src = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(src.as_ptr() as *const __m128i) });
            let words = _mm256_shuffle_epi8(src, _mm256_add_epi32(_mm256_mullo_epi32(byte, spread), window));
            let field = _mm256_and_si256(_mm256_srlv_epi32(words, _mm256_and_si256(off, c7)), mask);
            let u = _mm256_add_epi32(base, field);
            let e = _mm256_xor_si256(
                _mm256_srli_epi32(u, 1),
                _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_and_si256(u, one)),
            );
            // SAFETY: `e8` is 8 i32s.
            unsafe { _mm256_storeu_si256(e8.as_mut_ptr() as *mut __m256i, e) };
            bitpos += total;
        }
        self.bitpos = bitpos;
        self.residuals(whole, w);
    }
}

/// Per 8-bit mask of the lanes that renormalise: for each lane, the index of its word among
/// the next 8 (the number of renormalising lanes before it).
#[cfg(target_arch = "x86_64")]
static RENORM_PERM: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut i, mut k) = (0, 0);
        while i < 8 {
            if m >> i & 1 == 1 {
                t[m][i] = k;
                k += 1;
            }
            i += 1;
        }
        m += 1;
    }
    t
};

/// The MED reconstruction of a row (see [`TokenSource::row`]) from its residuals.
#[inline(always)]
fn med<const FIRST: bool>(res: &[i32], up: &[i32], cur: &mut [i32]) {
    let w = res.len();
    let (up, cur) = (&up[..w + 1], &mut cur[..w + 1]);
    let mut wv = cur[0];
    for i in 0..w {
        // MED (LOCO-I's median edge detector) as the median of W, N and W + N - NW: within
        // [min(W, N), max(W, N)], so in range, and without branches, which noise would make
        // random. The first row predicts W.
        let pv = if FIRST {
            wv
        } else {
            let (n, nw) = (up[i + 1], up[i]);
            wv.wrapping_add(n).wrapping_sub(nw).max(wv.min(n)).min(wv.max(n))
        };
        wv = pv.wrapping_add(res[i]);
        cur[i + 1] = wv;
    }
}

/// [`med`] for a row cut into [`SEGMENTS`] (version 6): each segment's first pixel is predicted
/// as the row's first (N; in the first row `cur[0]`), so the segments are independent chains,
/// stepped side by side: the throughput of the MED steps bounds the pass, not the latency of
/// one chain (~4-5 cycles a pixel). On x86-64-v3 one AVX2 vector holds the 8 chains.
#[inline(always)]
fn med_split<const FIRST: bool, const V3: bool>(res: &[i32], up: &[i32], cur: &mut [i32]) {
    let w = res.len();
    let (up, cur) = (&up[..w + 1], &mut cur[..w + 1]);
    let s = segment_starts(w);
    // Every segment has `l` or `l + 1` pixels.
    let l = w / SEGMENTS;
    let mut wv = [0i32; SEGMENTS];
    for k in 0..SEGMENTS {
        if s[k] < s[k + 1] {
            let p = s[k];
            let pv = if FIRST { cur[0] } else { up[p + 1] };
            wv[k] = pv.wrapping_add(res[p]);
            cur[p + 1] = wv[k];
        }
    }
    // Pixel `j` of segment `k`.
    macro_rules! step {
        ($k:expr, $j:expr) => {{
            let (k, j): (usize, usize) = ($k, $j);
            let i = s[k] + j;
            let pv = if FIRST {
                wv[k]
            } else {
                let (n, nw, wk) = (up[i + 1], up[i], wv[k]);
                wk.wrapping_add(n).wrapping_sub(nw).max(wk.min(n)).min(wk.max(n))
            };
            wv[k] = pv.wrapping_add(res[i]);
            cur[i + 1] = wv[k];
        }};
    }
    #[allow(unused_mut)]
    let mut j = 1;
    #[cfg(target_arch = "x86_64")]
    if V3 && !FIRST {
        // SAFETY: `V3` is set only where the CPU has AVX2.
        j = unsafe { med_segments_avx2(res, up, cur, &s, &mut wv, l) };
    }
    while j < l {
        for k in 0..SEGMENTS {
            step!(k, j);
        }
        j += 1;
    }
    if l >= 1 {
        // The longer segments' last pixel.
        for k in 0..SEGMENTS {
            if s[k + 1] - s[k] > l {
                step!(k, l);
            }
        }
    }
}

/// [`med_split`]'s pixels from 1 on of the 8 segments (their first ones decoded, their values
/// in `wv`), 8 at a time: a vector a step (lane `k` segment `k`), the segments' residuals and
/// rows above turned into that order by 8 x 8 transposes, the values back likewise. Returns
/// where it stopped (`l`, the shortest segment's length, or up to 7 before it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn med_segments_avx2(
    res: &[i32],
    up: &[i32],
    cur: &mut [i32],
    s: &[usize; SEGMENTS + 1],
    wv: &mut [i32; SEGMENTS],
    l: usize,
) -> usize {
    use std::arch::x86_64::*;
    const { assert!(SEGMENTS == 8) };
    let mut j = 1;
    if j + 8 > l {
        return j;
    }
    // 8 rows of 8 i32s to 8 columns.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256(u0, u4, 0x20),
            _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20),
            _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31),
            _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31),
            _mm256_permute2x128_si256(u3, u7, 0x31),
        ]
    }
    let load = |v: &[i32], at: usize| -> __m256i {
        let v: &[i32; 8] = v[at..at + 8].try_into().expect("8 values");
        // SAFETY: 8 i32s.
        unsafe { _mm256_loadu_si256(v.as_ptr() as *const __m256i) }
    };
    // SAFETY: 8 i32s.
    let mut x = unsafe { _mm256_loadu_si256(wv.as_ptr() as *const __m256i) };
    // NW of pixel 1: N of pixel 0.
    let nw0: [i32; 8] = std::array::from_fn(|k| up[s[k] + 1]);
    // SAFETY: 8 i32s.
    let mut nw = unsafe { _mm256_loadu_si256(nw0.as_ptr() as *const __m256i) };
    // Segment k's pixels j..j + 8 are inside it (j + 8 <= l), so are their rows above.
    while j + 8 <= l {
        let e = transpose(std::array::from_fn(|k| load(res, s[k] + j)));
        let n = transpose(std::array::from_fn(|k| load(up, s[k] + j + 1)));
        let mut v = [_mm256_setzero_si256(); 8];
        for t in 0..8 {
            let grad = _mm256_add_epi32(x, _mm256_sub_epi32(n[t], nw));
            let lo = _mm256_min_epi32(x, n[t]);
            let hi = _mm256_max_epi32(x, n[t]);
            x = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(grad, lo), hi), e[t]);
            v[t] = x;
            nw = n[t];
        }
        for (k, v) in transpose(v).into_iter().enumerate() {
            let at = s[k] + j + 1;
            let dst: &mut [i32; 8] = (&mut cur[at..at + 8]).try_into().expect("8 values");
            // SAFETY: 8 i32s.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, v) };
        }
        j += 8;
    }
    // SAFETY: 8 i32s.
    unsafe { _mm256_storeu_si256(wv.as_mut_ptr() as *mut __m256i, x) };
    j
}

/// Weight of a frequency code (see [`MAX_CODE`]).
fn code_weight(c: u8) -> u64 {
    let c = c as u64 - 1;
    (4 + c % 4) << (c / 4)
}

/// The frequencies (summing to 2^TAB_BITS, each present token at least 1) of a table's codes.
/// Integer arithmetic: the encoder and the decoder get the same table everywhere.
fn frequencies(codes: &[u8]) -> Option<[u32; NTOK]> {
    let present = codes.iter().filter(|&&c| c > 0).count() as u64;
    if present == 0 || codes.len() > NTOK || codes.iter().any(|&c| c > MAX_CODE) {
        return None;
    }
    let total: u64 = codes.iter().filter(|&&c| c > 0).map(|&c| code_weight(c)).sum();
    let spare = TAB_SIZE as u64 - present;
    let mut f = [0u32; NTOK];
    for (f, &c) in f.iter_mut().zip(codes) {
        if c > 0 {
            *f = 1 + (code_weight(c) * spare / total) as u32;
        }
    }
    // The rounding's remainder to the (first) most frequent token.
    let sum: u32 = f.iter().sum();
    let top = (0..NTOK).fold(0, |b, i| if f[i] > f[b] { i } else { b });
    f[top] += TAB_SIZE as u32 - sum;
    Some(f)
}

/// The code whose weight is nearest (in ratio) to `count` out of `total`, scaled to the table.
fn frequency_code(count: u64, total: u64) -> u8 {
    if count == 0 {
        return 0;
    }
    // Target weight in quarter units of 2^TAB_BITS.
    let t = (count << (TAB_BITS + 2)) / total;
    let mut best = 1u8;
    for c in 2..=MAX_CODE {
        // Compare t / w(c - 1) with w(c) / t: the geometric midpoint.
        let (lo, hi) = (code_weight(c - 1), code_weight(c));
        if t * t >= lo * hi {
            best = c;
        }
    }
    best
}

/// log2(x) in 1/65536 units, by integer squaring (the encoder's cost estimates are the same
/// everywhere).
fn log2_fp(x: u64) -> u64 {
    let b = 63 - x.max(1).leading_zeros() as u64;
    let mut m = if b >= 31 { x >> (b - 31) } else { x << (31 - b) };
    let mut r = b << 16;
    for i in (0..16).rev() {
        m = (m * m) >> 31;
        if m >= 1 << 32 {
            m >>= 1;
            r |= 1 << i;
        }
    }
    r
}

/// Estimated bits (1/65536 units) to code `counts` with their own table, the table included.
fn table_cost(counts: &[u32]) -> u64 {
    let n: u64 = counts.iter().map(|&c| c as u64).sum();
    if n == 0 {
        return 0;
    }
    let mut bits = n * log2_fp(n);
    let mut present = 0;
    for &c in counts.iter().filter(|&&c| c > 0) {
        bits -= c as u64 * log2_fp(c as u64);
        present += 1;
    }
    bits + ((16 + 5 * present) << 16)
}

/// The context map: of a few groupings of the contexts (per channel or shared; all error-size
/// levels, pairs, fours or one; all gradient levels or one), the encoder picks the one with
/// the smallest estimated size, tables included (small images want few tables).
/// Returns the map (context -> table) and the tables' counts.
fn choose_tables(hist: &[u32], channels: usize) -> (Vec<u8>, Vec<[u32; NTOK]>) {
    let nctx = channels * CTX_PER_CHANNEL;
    let mut best: Option<(u64, Vec<u8>, Vec<[u32; NTOK]>)> = None;
    for per_channel in [true, false] {
        if !per_channel && channels == 1 {
            continue;
        }
        for (q_shift, g_shift) in [(0, 0), (0, 3), (1, 0), (1, 3), (2, 0), (2, 3), (5, 3)] {
            // Each context to the first context of its group.
            let group = |ctx: usize| {
                let (ch, q, g) = (ctx / CTX_PER_CHANNEL, ctx % CTX_PER_CHANNEL / NG, ctx % NG);
                let c = (q >> q_shift << q_shift) * NG + (g >> g_shift << g_shift);
                if per_channel {
                    ch * CTX_PER_CHANNEL + c
                } else {
                    c
                }
            };
            let mut groups = vec![[0u32; NTOK]; nctx];
            for ctx in 0..nctx {
                let g = &mut groups[group(ctx)];
                for (a, &b) in g.iter_mut().zip(&hist[ctx * NTOK..(ctx + 1) * NTOK]) {
                    *a += b;
                }
            }
            let mut table_of = vec![usize::MAX; nctx];
            let mut tables = Vec::new();
            let mut cost = 0;
            for (gi, counts) in groups.iter().enumerate() {
                if counts.iter().any(|&c| c > 0) {
                    table_of[gi] = tables.len();
                    tables.push(*counts);
                    cost += table_cost(counts);
                }
            }
            if tables.is_empty() || tables.len() > MAX_TABLES || best.as_ref().is_some_and(|b| b.0 <= cost) {
                continue;
            }
            // Contexts no sample has: any table.
            let cmap = (0..nctx).map(|ctx| table_of[group(ctx)].try_into().unwrap_or(0)).collect();
            best = Some((cost, cmap, tables));
        }
    }
    let (_, cmap, tables) = best.expect("a channel's q-only grouping has at most 32 tables");
    (cmap, tables)
}

/// Interleaved rANS states of a format version (2 to 6).
fn rans_states(version: u8) -> usize {
    match version {
        VERSION_2 => 2,
        VERSION_5 | VERSION_6 => 32,
        _ => 4,
    }
}

/// Where each of a `w`-pixel row's [`SEGMENTS`] segments starts (version 6), then `w`: `k *
/// w / SEGMENTS`, so the lengths differ by at most one (rows shorter than `SEGMENTS` have
/// empty segments: a start may repeat).
#[inline(always)]
fn segment_starts(w: usize) -> [usize; SEGMENTS + 1] {
    std::array::from_fn(|k| k * w / SEGMENTS)
}

/// The pixel streams of versions 2 to 6 (`states` rANS states; `split`: rows cut into
/// [`SEGMENTS`], version 6): table section (plain), rANS stream, raw-bit stream.
fn encode_pixels_v2(
    span: &[u8],
    g: &Geometry,
    infos: &[ChanInfo],
    states: usize,
    split: bool,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    if g.pixels == 0 {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let samples = g.pixels * g.channels;
    let mut sink = TokenSink {
        toks: Vec::with_capacity(samples),
        hist: vec![0; g.channels * CTX_PER_CHANNEL * NTOK],
        bits: BitWriter::new(span.len() / 2),
    };
    let mut chans: Vec<MedChannel> =
        infos.iter().map(|c| MedChannel::new(c.model_range(), g.columns, split)).collect();
    let ranks = rank_maps(infos);
    let load = row_loader(g);
    // The base channel's |residual|s for the first channel: none.
    let zeros = vec![0u32; g.columns + 4];
    for (r, row) in span.chunks(g.columns * g.pixel_bytes()).enumerate() {
        let w = row.len() / g.pixel_bytes();
        for ch in 0..chans.len() {
            let (first, rest) = chans.split_at_mut(ch);
            let c = &mut rest[0];
            load_model_row(load, row, g, ch, &infos[ch], &ranks[ch], &mut c.cur[1..1 + w]);
            c.contexts(first.first().map_or(&zeros[..], |b| &b.mcur[..]), r, ch * CTX_PER_CHANNEL, w);
            c.residuals(r, w);
            sink.row(&c.ctx[..w], &c.res[..w]);
        }
        chans.iter_mut().for_each(MedChannel::next_row);
    }
    let (cmap, counts) = choose_tables(&sink.hist, g.channels);

    // Table section: count, context map, each table's frequency codes.
    let mut section = Vec::with_capacity(2 + cmap.len() + counts.len() * (1 + NTOK));
    section.extend_from_slice(&(counts.len() as u16).to_le_bytes());
    section.extend_from_slice(&cmap);
    let mut freqs = Vec::with_capacity(counts.len());
    for c in &counts {
        let total: u64 = c.iter().map(|&n| n as u64).sum();
        let codes: Vec<u8> = c.iter().map(|&n| frequency_code(n as u64, total)).collect();
        let len = codes.iter().rposition(|&c| c > 0).expect("a table has a token") + 1;
        section.push(len as u8);
        section.extend_from_slice(&codes[..len]);
        let f = frequencies(&codes[..len]).expect("valid codes");
        let mut start = [0u32; NTOK];
        for t in 1..NTOK {
            start[t] = start[t - 1] + f[t - 1];
        }
        freqs.push((f, start));
    }

    // rANS codes backwards; the decoder reads the words in the reverse order they come out.
    // Sample k in state k % states, as the decoder takes them in turn.
    let mut xs = vec![RANS_L; states];
    let mut words: Vec<u16> = Vec::with_capacity(samples);
    for (k, &tc) in sink.toks.iter().enumerate().rev() {
        let (f, start) = &freqs[cmap[(tc >> 8) as usize] as usize];
        let t = (tc & 0xFF) as usize;
        let (f, start) = (f[t], start[t]);
        let x = &mut xs[k % states];
        if *x as u64 >= (f as u64) << (32 - TAB_BITS) {
            words.push(*x as u16);
            *x >>= 16;
        }
        *x = ((*x / f) << TAB_BITS) + *x % f + start;
    }
    let mut rans = Vec::with_capacity(4 * states + 2 * words.len());
    for x in &xs {
        rans.extend_from_slice(&x.to_le_bytes());
    }
    for w in words.iter().rev() {
        rans.extend_from_slice(&w.to_le_bytes());
    }
    (section, rans, sink.bits.finish())
}

fn compress_tables(section: &[u8]) -> Result<(u8, Vec<u8>)> {
    if section.is_empty() {
        return Ok((METHOD_STORED, Vec::new()));
    }
    let z = zstd::bulk::compress(section, 19).map_err(|e| codec_err(format!("zstd: {e}")))?;
    if z.len() < section.len() {
        Ok((METHOD_ZSTD, z))
    } else {
        Ok((METHOD_STORED, section.to_vec()))
    }
}

/// Contexts of all channels.
const MAX_CONTEXTS: usize = MAX_CHANNELS * CTX_PER_CHANNEL;

/// The decoder's tables, one after the other in `slots`: per slot, frequency | (slot - start)
/// << 12 | token << 24 of its token (8 KiB a table; the rANS step is one lookup, and 8 lanes
/// take it by one gather); per context, where its table starts.
struct Tables {
    /// Per context: its table's number times [`TAB_SIZE`] (< `slots.len()`).
    first: [u32; MAX_CONTEXTS],
    slots: Vec<u32>,
}

/// The table section read and checked: the context map and the tables.
fn read_tables(section: &[u8], channels: usize) -> Result<Tables> {
    let bad = || codec_err("bad table section");
    let nctx = channels * CTX_PER_CHANNEL;
    let count = u16::from_le_bytes(section.get(..2).ok_or_else(bad)?.try_into().expect("2 bytes")) as usize;
    let cmap = section.get(2..2 + nctx).ok_or_else(bad)?;
    if count == 0 || count > MAX_TABLES || cmap.iter().any(|&t| t as usize >= count) {
        return Err(bad());
    }
    let mut first = [0u32; MAX_CONTEXTS];
    for (f, &t) in first.iter_mut().zip(cmap) {
        *f = (t as u32) << TAB_BITS;
    }
    let mut at = 2 + nctx;
    // A table takes at least two bytes (its length, one code): a forged count is refused here,
    // not after its 8 KiB of slots each were allocated and zeroed.
    if section.len() < at + 2 * count {
        return Err(bad());
    }
    let mut slots = vec![0u32; count * TAB_SIZE];
    for table in slots.chunks_exact_mut(TAB_SIZE) {
        let len = *section.get(at).ok_or_else(bad)? as usize;
        let codes = section.get(at + 1..at + 1 + len).ok_or_else(bad)?;
        at += 1 + len;
        let f = frequencies(codes).ok_or_else(bad)?;
        let mut start = 0;
        for (t, &f) in f.iter().enumerate() {
            for (k, e) in table[start..start + f as usize].iter_mut().enumerate() {
                *e = f | (k as u32) << 12 | (t as u32) << 24;
            }
            start += f as usize;
        }
    }
    if at != section.len() {
        return Err(bad());
    }
    Ok(Tables { first, slots })
}

/// A version's pixel streams: table section, rANS stream, raw-bit stream.
type RansStreams<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// The pixels of versions 2 (`N` = 2), 3 and 4 (`N` = 4), 5 and 6 (`N` = 32) from their streams. On x86-64 CPUs with
/// AVX2 and BMI2 the same code compiled for them (the crate is built for baseline x86-64):
/// the contexts' loop runs 8 lanes wide and the bit extraction takes single-µop shifts.
/// Integer code and exact conversions only, so both compilations decode alike (tested).
fn decode_pixels_rans<const N: usize>(
    streams: RansStreams<'_>,
    g: &Geometry,
    infos: &[ChanInfo],
    split: bool,
    out: &mut [u8],
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if x86_v3() && !tests_want_portable() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { decode_pixels_x86_v3::<N>(streams, g, infos, split, out) };
    }
    decode_pixels_body::<N, false>(streams, g, infos, split, out)
}

#[cfg(test)]
thread_local! {
    /// Set by the tests that run the portable decoder on CPUs that have the x86-64-v3 one.
    static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline(always)]
fn tests_want_portable() -> bool {
    #[cfg(test)]
    return PORTABLE.with(|p| p.get());
    #[cfg(not(test))]
    false
}

/// The CPU runs code compiled for x86-64-v3's integer features (AVX2, BMI1/2, LZCNT).
#[cfg(target_arch = "x86_64")]
pub(super) fn x86_v3() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("popcnt")
        && std::is_x86_feature_detected!("bmi1")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("lzcnt")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,bmi2,lzcnt")]
unsafe fn decode_pixels_x86_v3<const N: usize>(
    streams: RansStreams<'_>,
    g: &Geometry,
    infos: &[ChanInfo],
    split: bool,
    out: &mut [u8],
) -> Result<()> {
    decode_pixels_body::<N, true>(streams, g, infos, split, out)
}

/// The decode; `V3`: the CPU has x86-64-v3's features (AVX2 is used explicitly). Soundness:
/// `V3 = true` instantiations (of this, [`TokenSource::row`], [`med_split`] and
/// `RowWriter::write`) reach AVX2
/// intrinsics, so they must be called only from `decode_pixels_x86_v3`, which is entered after
/// the run-time feature check; every other caller passes `false`.
#[inline(always)]
fn decode_pixels_body<const N: usize, const V3: bool>(
    (tables, rans, raw): RansStreams<'_>,
    g: &Geometry,
    infos: &[ChanInfo],
    split: bool,
    out: &mut [u8],
) -> Result<()> {
    let tables = read_tables(tables, g.channels)?;
    // N states, then whole words.
    if rans.len() < 4 * N || !rans.len().is_multiple_of(2) {
        return Err(codec_err(format!("bad rANS stream length {}", rans.len())));
    }
    let x: [u32; N] =
        std::array::from_fn(|k| u32::from_le_bytes(rans[4 * k..4 * k + 4].try_into().expect("4 bytes")));
    if x.iter().any(|&x| x < RANS_L) {
        return Err(codec_err("bad rANS state"));
    }
    let mut words: Vec<u16> =
        rans[4 * N..].chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect();
    let nwords = words.len();
    words.extend_from_slice(&[0; N]);
    let mut padded = Vec::with_capacity(raw.len() + RAW_PAD);
    padded.extend_from_slice(raw);
    padded.extend_from_slice(&[0; RAW_PAD]);
    let mut io = TokenSource::<N> {
        x,
        words: &words,
        pos: 0,
        tables: &tables,
        raw: &padded,
        bitpos: 0,
        toks: vec![0; g.columns],
        res: vec![0; g.columns],
        split,
    };
    let mut chans: Vec<MedChannel> =
        infos.iter().map(|c| MedChannel::new(c.model_range(), g.columns, split)).collect();
    let row_bytes = g.columns * g.pixel_bytes();
    let mut writer = RowWriter::new(g);
    let zeros = vec![0u32; g.columns + 4];
    for (r, row) in out.chunks_mut(row_bytes).enumerate() {
        let w = row.len() / g.pixel_bytes();
        let mut ok = true;
        for ch in 0..chans.len() {
            let (first, rest) = chans.split_at_mut(ch);
            let c = &mut rest[0];
            c.contexts(first.first().map_or(&zeros[..], |b| &b.mcur[..]), r, ch * CTX_PER_CHANNEL, w);
            // Left of the row: W = NW = N; of the first row: W, the middle of the range.
            c.cur[0] = if r == 0 { c.lo + (c.hi - c.lo) / 2 } else { c.up[1] };
            let kept = if r == 0 {
                io.row::<true, V3>(&c.ctx[..w], &c.up, &mut c.cur)
            } else {
                io.row::<false, V3>(&c.ctx[..w], &c.up, &mut c.cur)
            };
            ok &= c.check_row(r, w, kept.then(|| &io.res[..w]));
        }
        if !ok {
            return Err(codec_err(format!("corrupt pixel stream (row {r})")));
        }
        chans.iter_mut().for_each(MedChannel::next_row);
        writer.write::<V3>(chans.iter().map(|c| &c.up[1..1 + w]), infos, g, row);
    }
    // The encoder started from RANS_L: anything else, or words left over, is corruption.
    // The raw bits end in the last byte (the encoder pads it with zeros).
    let raw_exact = io.bitpos <= 8 * raw.len() && io.bitpos + 8 > 8 * raw.len();
    if io.x != [RANS_L; N] || io.pos != nwords || !raw_exact {
        return Err(codec_err("pixel stream is corrupt or truncated"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Range coder (LZMA's) and the raw-bit stream.

#[cfg(test)]
struct RangeEncoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

#[cfg(test)]
impl RangeEncoder {
    fn new(cap: usize) -> Self {
        RangeEncoder { low: 0, range: u32::MAX, cache: 0, cache_size: 1, out: Vec::with_capacity(cap) }
    }

    #[inline(always)]
    fn encode(&mut self, bit: u32, p0: u32) {
        let bound = (self.range >> 16) * p0;
        let mask = 0u32.wrapping_sub(bit);
        self.low += (bound & mask) as u64;
        self.range = (bound & !mask) | (self.range.wrapping_sub(bound) & mask);
        while self.range < (1 << 24) {
            self.range <<= 8;
            self.shift_low();
        }
    }

    #[inline(always)]
    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut temp = self.cache;
            loop {
                self.out.push(temp.wrapping_add(carry));
                temp = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

struct RangeDecoder<'a> {
    code: u32,
    range: u32,
    src: &'a [u8],
    pos: usize,
}

impl<'a> RangeDecoder<'a> {
    fn new(src: &'a [u8]) -> Self {
        let mut d = RangeDecoder { code: 0, range: u32::MAX, src, pos: 0 };
        for _ in 0..5 {
            d.code = (d.code << 8) | d.next_byte();
        }
        d
    }

    #[inline(always)]
    fn next_byte(&mut self) -> u32 {
        let b = self.src.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b as u32
    }

    #[inline(always)]
    fn decode(&mut self, p0: u32) -> u32 {
        let bound = (self.range >> 16) * p0;
        let bit = (self.code >= bound) as u32;
        let mask = 0u32.wrapping_sub(bit);
        self.code -= bound & mask;
        self.range = (bound & !mask) | (self.range.wrapping_sub(bound) & mask);
        while self.range < (1 << 24) {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next_byte();
        }
        bit
    }

    /// Read past the end of the stream (beyond the encoder's 4 flush bytes).
    fn overrun(&self) -> bool {
        self.pos > self.src.len()
    }
}

struct BitWriter {
    buf: u64,
    n: u32,
    out: Vec<u8>,
}

impl BitWriter {
    fn new(cap: usize) -> Self {
        BitWriter { buf: 0, n: 0, out: Vec::with_capacity(cap) }
    }

    #[inline(always)]
    fn put(&mut self, n: u32, v: u32) {
        self.buf |= (v as u64) << self.n;
        self.n += n;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.buf as u32).to_le_bytes());
            self.buf >>= 32;
            self.n -= 32;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        while self.n > 0 {
            self.out.push(self.buf as u8);
            self.buf >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.out
    }
}

struct BitReader<'a> {
    buf: u64,
    /// Bits in `buf`.
    n: u32,
    src: &'a [u8],
    pos: usize,
    /// Zero bits appended past the end of `src` (and still in `buf` or consumed).
    padded: u64,
    consumed_pad: bool,
}

impl<'a> BitReader<'a> {
    fn new(src: &'a [u8]) -> Self {
        BitReader { buf: 0, n: 0, src, pos: 0, padded: 0, consumed_pad: false }
    }

    #[inline(always)]
    fn get(&mut self, n: u32) -> u32 {
        if self.n < n {
            self.refill();
        }
        let v = (self.buf & ((1u64 << n) - 1)) as u32;
        self.buf >>= n;
        self.n -= n;
        if (self.n as u64) < self.padded {
            self.consumed_pad = true;
        }
        v
    }

    #[inline(never)]
    fn refill(&mut self) {
        while self.n <= 56 {
            match self.src.get(self.pos) {
                Some(&b) => {
                    self.buf |= (b as u64) << self.n;
                    self.pos += 1;
                }
                None => self.padded += 8,
            }
            self.n += 8;
        }
    }

    /// Bits were read past the end of the stream.
    fn overrun(&self) -> bool {
        self.consumed_pad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;
    use crate::error::Error;
    use crate::testutil::{recrc, Rng};

    /// Image-like samples (smooth field, edges, a flat disc, noise) for every channel, as
    /// `bps`-byte words in the given byte order, interleaved or planar. `bits` caps the values
    /// (bits above it random when `junk` is set); `signed` centres them on zero.
    #[allow(clippy::too_many_arguments)]
    fn image(
        seed: u64,
        cols: usize,
        rows: usize,
        spp: usize,
        bps: usize,
        be: bool,
        signed: bool,
        planar: bool,
    ) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        let max: i64 = if bps == 1 { 255 } else { 4095 };
        let mut planes = vec![Vec::with_capacity(cols * rows); spp];
        for y in 0..rows {
            for x in 0..cols {
                let (dx, dy) = (x as i64 - cols as i64 / 2, y as i64 - rows as i64 / 2);
                for (c, plane) in planes.iter_mut().enumerate() {
                    let mut v = (x as i64 * 3 + y as i64 * 2 + c as i64 * 17) % (max / 2);
                    if x > cols / 3 {
                        v += max / 4;
                    }
                    if dx * dx + dy * dy < (cols as i64 * cols as i64) / 16 {
                        v = max / 3;
                    } else {
                        v += rng.below(7) as i64 - 3;
                    }
                    let v = v.clamp(0, max) - if signed { max / 2 } else { 0 };
                    plane.push(v);
                }
            }
        }
        let order: Vec<i64> = if planar {
            planes.concat()
        } else {
            (0..cols * rows).flat_map(|i| planes.iter().map(move |p| p[i])).collect()
        };
        let mut out = Vec::with_capacity(order.len() * bps);
        for v in order {
            let b = (v as u64).to_le_bytes();
            if be {
                out.extend(b[..bps].iter().rev());
            } else {
                out.extend_from_slice(&b[..bps]);
            }
        }
        out
    }

    fn native(bps: u8, be: bool, cols: u32, spp: u16, planar: bool) -> PixelLayout {
        PixelLayout::native(0, 0, bps, be, cols, spp, planar)
    }

    /// `span` between a header and a trailer of arbitrary bytes; the layout placed on it.
    fn object(
        seed: u64,
        header: usize,
        span: &[u8],
        trailer: usize,
        layout: PixelLayout,
    ) -> (Vec<u8>, PixelLayout) {
        let mut rng = Rng(seed);
        let mut obj = rng.bytes(header);
        obj.extend_from_slice(span);
        obj.extend(rng.bytes(trailer));
        (obj, PixelLayout { offset: header, length: span.len(), ..layout })
    }

    /// The cold model's round trip (and the public entry point's), bit for bit; and versions 1
    /// and 2's. Each also through the portable decoder when the CPU takes the x86-64-v3 one.
    fn roundtrip(obj: &[u8], l: &PixelLayout) -> usize {
        let stored = encode_cold_only(obj, l).unwrap();
        assert_eq!(stored[3], VERSION_6);
        assert_eq!(decode(Codec::Cold, &stored, obj.len()).unwrap(), obj, "cold model, {l:?}");
        assert_eq!(decode_portable(&stored, obj.len()).unwrap(), obj, "portable decoder, {l:?}");
        for version in [VERSION_1, VERSION_2, VERSION_3, VERSION_4, VERSION_5] {
            let old = encode_version(obj, l, version).unwrap();
            assert_eq!(old[3], version);
            assert_eq!(decode(Codec::Cold, &old, obj.len()).unwrap(), obj, "version {version}, {l:?}");
        }
        for version in [VERSION_2, VERSION_4, VERSION_5] {
            let old = encode_cold_version(obj, l, version).unwrap();
            assert_eq!(decode_portable(&old, obj.len()).unwrap(), obj, "portable, version {version}, {l:?}");
        }
        let (codec, best) = encode_cold(obj, Some(l)).unwrap();
        assert!(best.len() <= stored.len());
        assert_eq!(decode(codec, &best, obj.len()).unwrap(), obj, "encode_cold, {l:?}");
        stored.len()
    }

    #[test]
    fn every_sample_kind_roundtrips() {
        let mut seed = 1;
        for bps in [1u8, 2] {
            for be in [false, true] {
                for signed in [false, true] {
                    for (spp, planar) in [(1u16, false), (3, false), (3, true), (2, false), (4, false)] {
                        for (cols, rows) in [(37usize, 23usize), (1, 50), (64, 1), (5, 2), (200, 3)] {
                            seed += 1;
                            let span =
                                image(seed, cols, rows, spp as usize, bps as usize, be, signed, planar);
                            let (obj, l) =
                                object(seed, 131, &span, 17, native(bps, be, cols as u32, spp, planar));
                            roundtrip(&obj, &l);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn compresses_images() {
        for (bps, spp) in [(2u8, 1u16), (1, 1), (1, 3), (2, 3)] {
            let span = image(5, 256, 128, spp as usize, bps as usize, false, false, false);
            let (obj, l) = object(5, 300, &span, 0, native(bps, false, 256, spp, false));
            let n = roundtrip(&obj, &l);
            let (_, hot) = encode_hot(&obj, Some(&l), DEFAULT_HOT_LEVEL).unwrap();
            assert!(n < obj.len() / 3, "bps {bps} spp {spp}: {n} of {}", obj.len());
            assert!(n < hot.len(), "bps {bps} spp {spp}: cold {n} vs hot {}", hot.len());
            assert_eq!(encode_cold(&obj, Some(&l)).unwrap().0, Codec::Cold);
        }
    }

    #[test]
    fn odd_geometries_roundtrip() {
        let span = image(9, 33, 9, 1, 2, false, false, false);
        for (cols, len) in [
            (33u32, span.len()),  // exact
            (33, span.len() - 1), // trailing odd byte
            (33, span.len() - 2), // partial last row
            (0, span.len()),      // columns unknown: one row
            (1000, span.len()),   // more columns than pixels
            (70_000, span.len()), // more than a row may have
            (1, span.len()),      // one column
            (33, 1),              // shorter than a sample
            (33, 0),              // empty span
        ] {
            let (obj, l) = object(3, 64, &span[..len], 5, native(2, false, cols, 1, false));
            roundtrip(&obj, &l);
        }
        // Partial last pixel of an RGB span; a span ending the object; a span starting it.
        let rgb = image(4, 10, 10, 3, 1, false, false, false);
        for (h, t, len) in [(10, 10, rgb.len() - 2), (0, 0, rgb.len()), (7, 0, rgb.len() - 1)] {
            let (obj, l) = object(8, h, &rgb[..len], t, native(1, false, 10, 3, false));
            roundtrip(&obj, &l);
        }
    }

    #[test]
    fn long_rows_are_cut() {
        let span: Vec<u8> = (0..150_000u32).map(|i| (i / 7 % 251) as u8).collect();
        let (obj, l) = object(3, 10, &span, 10, native(1, false, 0, 1, false));
        let stored = encode_cold_only(&obj, &l).unwrap();
        assert_eq!(u32::from_le_bytes(stored[8..12].try_into().unwrap()), 1 << 16);
        roundtrip(&obj, &l);
    }

    #[test]
    fn any_bit_pattern_roundtrips() {
        let mut rng = Rng(77);
        // Random bits above 12 stored bits, full-range noise, extremes, constants.
        let junk: Vec<u8> = (0..64 * 48)
            .flat_map(|i: u32| (((i * 13) % 4096) as u16 | (rng.next() as u16 & 0xF000)).to_le_bytes())
            .collect();
        let noise = rng.bytes(64 * 48 * 2);
        let extremes: Vec<u8> = (0..64 * 48)
            .flat_map(|i: u32| if i.is_multiple_of(3) { [0x00, 0x80] } else { [0xFF, 0x7F] })
            .collect();
        let constant = vec![0xA5u8; 64 * 48 * 2];
        for span in [&junk, &noise, &extremes, &constant] {
            for (spp, be) in [(1u16, false), (3, true), (3, false), (2, false)] {
                let span = &span[..span.len() - span.len() % (2 * spp as usize)];
                let (obj, l) = object(1, 40, span, 40, native(2, be, 64 / spp as u32, spp, false));
                roundtrip(&obj, &l);
                let (obj, l) = object(1, 40, span, 40, native(1, be, 64, spp, false));
                roundtrip(&obj, &l);
            }
        }
    }

    #[test]
    fn sparse_values_are_compacted() {
        // Multiples of 37 (a rescaled image): the model codes ranks.
        let span: Vec<u8> = (0..128 * 64u32)
            .flat_map(|i| ((((i % 128) / 3 + i / 128) % 100) as u16 * 37).to_le_bytes())
            .collect();
        let (obj, l) = object(2, 10, &span, 10, native(2, false, 128, 1, false));
        let stored = encode_cold_only(&obj, &l).unwrap();
        let count_at = FIXED_HEADER_V2 + 8;
        assert_eq!(u32::from_le_bytes(stored[count_at..count_at + 4].try_into().unwrap()), 100);
        let v1 = encode_version(&obj, &l, VERSION_1).unwrap();
        let count_at = FIXED_HEADER + 8;
        assert_eq!(u32::from_le_bytes(v1[count_at..count_at + 4].try_into().unwrap()), 100);
        roundtrip(&obj, &l);
    }

    #[test]
    fn swapped_pairs_of_big_endian_bytes() {
        let plain = image(6, 80, 40, 1, 1, false, false, false);
        let swapped: Vec<u8> = plain.chunks_exact(2).flat_map(|p| [p[1], p[0]]).collect();
        let (obj, l) = object(2, 33, &swapped, 9, native(1, true, 80, 1, false));
        let stored = encode_cold_only(&obj, &l).unwrap();
        assert_eq!(stored[4] & FLAG_SWAP_PAIRS, FLAG_SWAP_PAIRS);
        roundtrip(&obj, &l);
        // Little-endian 8-bit data is never swapped.
        let (obj, l) = object(2, 33, &swapped, 9, native(1, false, 80, 1, false));
        assert_eq!(encode_cold_only(&obj, &l).unwrap()[4] & FLAG_SWAP_PAIRS, 0);
    }

    #[test]
    fn unsupported_objects_fall_back_to_hot() {
        let span = image(3, 16, 16, 1, 2, false, false, false);
        let (obj, l) = object(1, 50, &span, 50, native(2, false, 16, 1, false));
        let cases = [
            (None, ColdFallback::NoPixelData),
            (Some(PixelLayout::verbatim(50, span.len())), ColdFallback::Encapsulated),
            (Some(PixelLayout { bytes_per_sample: 4, ..l.clone() }), ColdFallback::UnsupportedSamples),
            (Some(PixelLayout { samples_per_pixel: 5, ..l.clone() }), ColdFallback::UnsupportedSamples),
            (Some(PixelLayout { offset: obj.len(), ..l.clone() }), ColdFallback::BadLayout),
        ];
        for (layout, why) in cases {
            assert_eq!(cold_support(obj.len(), layout.as_ref()), Some(why));
            let (codec, stored) = encode_cold(&obj, layout.as_ref()).unwrap();
            assert_ne!(codec, Codec::Cold);
            assert_eq!(decode(codec, &stored, obj.len()).unwrap(), obj);
            if let Some(layout) = &layout {
                assert!(encode_cold_only(&obj, layout).is_err());
            }
        }
        assert_eq!(cold_support(obj.len(), Some(&l)), None);
    }

    /// The real corpus (pydicom-data and pydicom's test files in the repository's `.venv`):
    /// every file whose pixel data the model codes round-trips. Skipped when absent.
    #[test]
    fn real_corpus_roundtrips() {
        let site =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib/python3.11/site-packages");
        let dirs = [site.join("data_store/data"), site.join("pydicom/data/test_files")];
        let mut files: Vec<_> = dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .collect();
        files.sort();
        if files.is_empty() {
            eprintln!("corpus not found under {}: skipped", site.display());
            return;
        }
        // Unoptimised test builds are slow: the larger files are left to the example.
        let limit = if cfg!(debug_assertions) { 1 << 20 } else { usize::MAX };
        let mut coded = 0;
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if data.len() > limit {
                continue;
            }
            let Ok(p) = crate::parse::parse_file(&data, crate::parse::INDEX_TAGS) else { continue };
            let layout = p.pixel.as_ref().and_then(|px| crate::object::pixel_layout(px, p.dataset_offset));
            if cold_support(data.len(), layout.as_ref()).is_none() {
                let stored = encode_cold_only(&data, layout.as_ref().unwrap()).unwrap();
                assert!(decode(Codec::Cold, &stored, data.len()).unwrap() == data, "{}", f.display());
                coded += 1;
            }
            let (codec, stored) = encode_cold(&data, layout.as_ref()).unwrap();
            assert!(decode(codec, &stored, data.len()).unwrap() == data, "{}", f.display());
        }
        assert!(coded > 10, "only {coded} corpus files went through the cold model");
    }

    /// Small objects and their stored forms, in every version.
    fn sample_stored() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut objects = Vec::new();
        for (bps, spp, be) in [(2u8, 1u16, false), (1, 3, false), (1, 1, true)] {
            let span = image(11, 24, 12, spp as usize, bps as usize, be, false, false);
            objects.push(object(4, 120, &span, 31, native(bps, be, 24, spp, false)));
        }
        let sparse: Vec<u8> = (0..400u32).flat_map(|i| ((i % 7) as u16 * 1000).to_le_bytes()).collect();
        objects.push(object(4, 20, &sparse, 1, native(2, false, 20, 1, false)));
        // Rows of two groups of 32 samples and 6 more: version 5's vector decoder and its tail.
        let wide = image(12, 70, 6, 1, 2, false, false, false);
        objects.push(object(4, 30, &wide, 3, native(2, false, 70, 1, false)));
        // Rows of 8 segments of 10 or 11 samples (2 channels) and of 17 or 18 (RGB): version 6's
        // vector MED, its scalar steps after it and the longer segments' last samples.
        let two = image(13, 83, 5, 2, 2, false, false, false);
        objects.push(object(4, 8, &two, 2, native(2, false, 83, 2, false)));
        let rgb = image(14, 141, 4, 3, 1, false, false, false);
        objects.push(object(4, 8, &rgb, 2, native(1, false, 141, 3, false)));
        let mut out = Vec::new();
        for (obj, l) in objects {
            for version in [VERSION_1, VERSION_2, VERSION_3, VERSION_4, VERSION_5, VERSION_6] {
                out.push((obj.clone(), encode_version(&obj, &l, version).unwrap()));
            }
        }
        out
    }

    #[test]
    fn truncation_and_length_mismatch_are_errors() {
        for (obj, stored) in sample_stored() {
            for cut in 0..stored.len() {
                let r = decode(Codec::Cold, &stored[..cut], obj.len());
                assert!(matches!(r, Err(Error::Codec { .. })), "prefix {cut} accepted");
            }
            let mut longer = stored.clone();
            longer.push(0);
            assert!(decode(Codec::Cold, &longer, obj.len()).is_err());
            assert!(decode(Codec::Cold, &stored, obj.len() + 1).is_err());
            assert!(decode(Codec::Cold, &stored, obj.len() - 1).is_err());
        }
    }

    #[test]
    fn bit_flips_are_errors() {
        let mut rng = Rng(7);
        for (obj, stored) in sample_stored() {
            for _ in 0..500 {
                let mut bad = stored.clone();
                for _ in 0..=rng.below(3) {
                    let i = rng.below(bad.len());
                    bad[i] ^= 1 << rng.below(8);
                }
                if bad == stored {
                    continue; // one bit flipped twice
                }
                assert!(matches!(decode(Codec::Cold, &bad, obj.len()), Err(Error::Codec { .. })));
            }
        }
    }

    /// Corruption that the CRC does not see (its value fixed up): every field is validated,
    /// nothing panics or allocates beyond the object, and whatever decodes has the right length.
    #[test]
    fn corrupt_streams_with_valid_crc_never_panic() {
        let mut rng = Rng(99);
        for (obj, stored) in sample_stored() {
            let body = stored.len() - CRC_LEN;
            for round in 0..3000 {
                let mut bad = stored.clone();
                // Mostly header bytes, sometimes anywhere; sometimes a whole field overwritten.
                let range = if rng.below(3) == 0 { body } else { body.min(FIXED_HEADER_V2 + 40) };
                for _ in 0..=rng.below(3) {
                    let i = rng.below(range);
                    bad[i] = match rng.below(3) {
                        0 => rng.next() as u8,
                        1 => bad[i] ^ (1 << rng.below(8)),
                        _ => 0xFF,
                    };
                }
                if round % 10 == 0 {
                    // Cut or extend the payload, lengths left as they were.
                    let at = rng.below(body);
                    bad.truncate(at);
                    let extra = rng.below(64);
                    bad.extend(rng.bytes(extra));
                    bad.extend_from_slice(&[0; CRC_LEN]);
                }
                let body = bad.len() - CRC_LEN;
                let crc = crc32fast::hash(&bad[..body]);
                bad[body..].copy_from_slice(&crc.to_le_bytes());
                if let Ok(out) = decode(Codec::Cold, &bad, obj.len()) {
                    assert_eq!(out.len(), obj.len());
                    // Version 4 checks what it decoded: whatever it accepts is the object.
                    assert!(stored[3] < VERSION_4 || out == obj, "a damaged checked stream decoded");
                }
            }
        }
    }

    /// Objects whose version-1 encodings are pinned (by the original version-1 encoder).
    fn golden_objects() -> Vec<(Vec<u8>, PixelLayout)> {
        let mut seed = 12345u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 24
        };
        let mut out = Vec::new();
        let mut push = |span: Vec<u8>, layout: PixelLayout, rnd: &mut dyn FnMut() -> u32| {
            let mut obj: Vec<u8> = (0..100u32).map(|i| (i * 7 % 251) as u8).collect();
            let offset = obj.len();
            let length = span.len();
            obj.extend_from_slice(&span);
            obj.extend((0..13).map(|_| rnd() as u8));
            out.push((obj, PixelLayout { offset, length, ..layout }));
        };
        // 16-bit little-endian grey, 40 x 30: gradient, edge, noise.
        let span: Vec<u8> = (0..40 * 30u32)
            .flat_map(|i| {
                let (x, y) = (i % 40, i / 40);
                let v = x * 37 + y * 21 + if x > 25 { 900 } else { 0 } + rnd() % 9;
                (v as u16).to_le_bytes()
            })
            .collect();
        push(span, PixelLayout::native(0, 0, 2, false, 40, 1, false), &mut rnd);
        // 8-bit RGB, 24 x 16.
        let span: Vec<u8> = (0..24 * 16u32)
            .flat_map(|i| {
                let (x, y) = (i % 24, i / 24);
                let g = (x * 5 + y * 3 + rnd() % 5) as u8;
                [g.wrapping_add(20), g, g.wrapping_sub(9).wrapping_add((rnd() % 3) as u8)]
            })
            .collect();
        push(span, PixelLayout::native(0, 0, 1, false, 24, 3, false), &mut rnd);
        // 16-bit big-endian multiples of 37 (compacted), 20 x 20, then an odd byte.
        let mut span: Vec<u8> = (0..20 * 20u32)
            .flat_map(|i| ((((i % 20) / 3 + i / 20 + rnd() % 2) % 40) as u16 * 37).to_be_bytes())
            .collect();
        span.push(0xAB);
        push(span, PixelLayout::native(0, 0, 2, true, 20, 1, false), &mut rnd);
        // 8-bit samples in big-endian words (swapped pairs), 32 x 8.
        let span: Vec<u8> = (0..32 * 8u32)
            .map(|i| ((i % 32) * 6 + (i / 32) * 4 + rnd() % 4) as u8)
            .collect::<Vec<u8>>()
            .chunks_exact(2)
            .flat_map(|p| [p[1], p[0]])
            .collect();
        push(span, PixelLayout::native(0, 0, 1, true, 32, 1, false), &mut rnd);
        out
    }

    const PINNED_V2: [(usize, u32); 4] =
        [(1898, 0x6220_3f89), (557, 0xc79a_fb6d), (366, 0xf60a_5a10), (354, 0x9b4c_81fb)];
    const PINNED_V3: [(usize, u32); 4] =
        [(1906, 0x6698_bed6), (561, 0x81e6_d99b), (370, 0xf980_68f8), (360, 0xa7d8_5c02)];
    const PINNED_V4: [(usize, u32); 4] =
        [(1914, 0x2beb_7804), (569, 0x2cd8_2889), (378, 0x5ec7_2da7), (368, 0xa8f6_5dcc)];
    const PINNED_V5: [(usize, u32); 4] =
        [(1994, 0xd192_af94), (649, 0xf0c5_da39), (472, 0x629b_b941), (458, 0x268a_1b7e)];
    const PINNED_V6: [(usize, u32); 4] =
        [(2021, 0x2df2_cb33), (662, 0x2b30_2521), (476, 0x9b5f_d97f), (462, 0x6f1f_ddb2)];

    /// Version 1 as the original encoder wrote it (length and CRC of its output, recorded from
    /// that encoder): what archives hold keeps decoding.
    #[test]
    fn version_1_is_pinned() {
        let pinned = [
            (2513, 1721, 0x0bc2_2885),
            (1265, 508, 0x2b1a_e41b),
            (914, 331, 0xa124_98ab),
            (369, 315, 0xa62a_d15f),
        ];
        for ((obj, l), (len, stored_len, crc)) in golden_objects().into_iter().zip(pinned) {
            assert_eq!(obj.len(), len);
            let stored = encode_version(&obj, &l, VERSION_1).unwrap();
            assert_eq!(stored.len(), stored_len);
            assert_eq!(u32::from_le_bytes(stored[stored.len() - 4..].try_into().unwrap()), crc);
            assert_eq!(decode(Codec::Cold, &stored, obj.len()).unwrap(), obj);
            roundtrip(&obj, &l);
        }
        // The samples cover compaction and swapped pairs.
        let objs = golden_objects();
        let count_at = FIXED_HEADER + 8;
        let v1 = encode_version(&objs[2].0, &objs[2].1, VERSION_1).unwrap();
        assert_eq!(u32::from_le_bytes(v1[count_at..count_at + 4].try_into().unwrap()), 27);
        let v1 = encode_version(&objs[3].0, &objs[3].1, VERSION_1).unwrap();
        assert_eq!(v1[4] & FLAG_SWAP_PAIRS, FLAG_SWAP_PAIRS);
    }

    /// Version 2's pieces: tokens, frequency tables, the context quantisation.
    #[test]
    fn version_2_tokens_and_tables() {
        for u in (0..1u32 << 18).step_by(7).chain([0, 15, 16, 17, (1 << 18) - 1]) {
            let (t, nb, v) = tokenize(u);
            assert!((t as usize) < NTOK);
            assert_eq!(TOKENS[t as usize].1, nb);
            assert_eq!(TOKENS[t as usize].0 + v, u);
            assert!(v < 1 << nb.max(1));
        }
        let mut rng = Rng(3);
        for _ in 0..2000 {
            let n = 1 + rng.below(NTOK);
            let codes: Vec<u8> =
                (0..n).map(|_| if rng.below(3) == 0 { 0 } else { rng.below(53) as u8 }).collect();
            match frequencies(&codes) {
                None => assert!(codes.iter().all(|&c| c == 0)),
                Some(f) => {
                    assert_eq!(f.iter().sum::<u32>(), TAB_SIZE as u32);
                    for (i, &f) in f.iter().enumerate() {
                        assert_eq!(f > 0, codes.get(i).is_some_and(|&c| c > 0));
                    }
                }
            }
        }
        assert!(frequencies(&[MAX_CODE + 1]).is_none());
        assert!(frequencies(&[1; NTOK + 1]).is_none());
        // Codes track counts: the biggest count gets the biggest frequency.
        let counts = [5u64, 1000, 30, 0, 1];
        let codes: Vec<u8> = counts.iter().map(|&c| frequency_code(c, 1036)).collect();
        let f = frequencies(&codes).unwrap();
        assert_eq!(f[3], 0);
        assert!(f[1] > f[2] && f[2] > f[0] && f[0] >= f[4] && f[4] >= 1);
        // Half-octaves of a + 2; bit lengths of g.
        let q = |a| context(a, 0) / NG;
        let qs: Vec<usize> = [0, 1, 2, 3, 4, 5, 6, 9, 10, 13, 14, 21, 22].iter().map(|&a| q(a)).collect();
        assert_eq!(qs, [0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7]);
        assert_eq!(q((1 << 23) - 1), NQ2 - 1);
        let gq: Vec<usize> =
            [0, 1, 2, 3, 4, 7, 8, 63, 64, 1 << 22].iter().map(|&g| context(0, g) % NG).collect();
        assert_eq!(gq, [0, 1, 2, 2, 3, 3, 4, 6, 7, 7]);
        assert_eq!(log2_fp(1), 0);
        assert_eq!(log2_fp(1 << 20), 20 << 16);
        assert!((log2_fp(3) as i64 - 103_872).abs() < 4);
    }

    /// Version 2 to 6 streams decode the same everywhere: their bytes are pinned (versions 2 to
    /// 5 as their encoders wrote them; they are kept, next to version 6's).
    #[test]
    fn versions_2_to_6_are_pinned() {
        let versions = [
            (VERSION_2, PINNED_V2),
            (VERSION_3, PINNED_V3),
            (VERSION_4, PINNED_V4),
            (VERSION_5, PINNED_V5),
            (VERSION_6, PINNED_V6),
        ];
        for (version, pinned) in versions {
            let mut crcs = Vec::new();
            for (obj, l) in golden_objects() {
                let stored = encode_cold_version(&obj, &l, version).unwrap();
                assert_eq!(stored[3], version);
                assert_eq!(decode(Codec::Cold, &stored, obj.len()).unwrap(), obj);
                assert_eq!(decode_portable(&stored, obj.len()).unwrap(), obj);
                crcs.push((stored.len(), u32::from_le_bytes(stored[stored.len() - 4..].try_into().unwrap())));
            }
            assert_eq!(crcs, pinned, "version {version}");
        }
    }

    /// Version 4 is version 3 and the XXH3-64 of the logical bytes, which a decode checks and
    /// reports; versions 1 to 3 decode as before, unchecked. Versions 5 and 6 have it too.
    #[test]
    fn version_4_checks_the_decoded_bytes() {
        let mut out = Vec::new();
        // Ok(true): checked against the stored checksum of the decoded bytes; `out` holds them.
        let checked = |stored: &[u8], len: usize, out: &mut Vec<u8>| {
            crate::codec::decode_checked_into(
                Codec::Cold,
                stored,
                len,
                out,
                crate::codec::StoredCrc::Unchecked,
            )
            .unwrap()
        };
        for (obj, l) in golden_objects() {
            let v6 = encode_cold_only(&obj, &l).unwrap();
            assert_eq!(v6[3], VERSION_6);
            let at = v6.len() - CRC_LEN - CHECK_LEN;
            assert_eq!(v6[at..at + CHECK_LEN], xxh3_64(&obj).to_le_bytes());
            assert!(checked(&v6, obj.len(), &mut out));
            assert_eq!(out, obj);
            let v4 = encode_cold_version(&obj, &l, VERSION_4).unwrap();
            let v3 = encode_cold_version(&obj, &l, VERSION_3).unwrap();
            assert_eq!(v4[3], VERSION_4);
            let at = v4.len() - CRC_LEN - CHECK_LEN;
            assert_eq!(v4[at..at + CHECK_LEN], xxh3_64(&obj).to_le_bytes());
            assert_eq!((&v4[4..at], v4.len()), (&v3[4..v3.len() - CRC_LEN], v3.len() + CHECK_LEN));
            assert!(checked(&v4, obj.len(), &mut out));
            assert_eq!(out, obj);
            for old in [VERSION_1, VERSION_2, VERSION_3] {
                let s = encode_version(&obj, &l, old).unwrap();
                assert!(!checked(&s, obj.len(), &mut out));
                assert_eq!(out, obj, "version {old}");
            }
            // The checksum of other bytes, the stream otherwise intact and its CRC right: an
            // error, not a silent success.
            for bit in [0, 17, 63] {
                let mut bad = v4.clone();
                bad[at + bit / 8] ^= 1 << (bit % 8);
                let r = decode(Codec::Cold, &recrc(bad), obj.len());
                assert!(
                    matches!(r, Err(Error::Codec { ref reason }) if reason.contains("stored checksum")),
                    "{r:?}"
                );
            }
            // A version-3 stream is not a version-4 one (it has no checksum) and back.
            let mut as_v4 = v3.clone();
            as_v4[3] = VERSION_4;
            assert!(decode(Codec::Cold, &recrc(as_v4), obj.len()).is_err());
            let mut as_v3 = v4.clone();
            as_v3[3] = VERSION_3;
            assert!(decode(Codec::Cold, &recrc(as_v3), obj.len()).is_err());
        }
    }

    /// Damage in the pixel streams that their own checks cannot see (a raw bit, which only
    /// changes a sample's low bits) decodes to other bytes from a version-3 stream, silently;
    /// version 4 refuses every one. Both CRCs made right again: what a decoder fault, memory
    /// corruption or a forged stream looks like.
    #[test]
    fn damaged_version_4_streams_with_right_crcs_are_refused() {
        let (mut silent_v3, mut refused_v4, mut refused_v5, mut refused_v6) = (0, 0, 0, 0);
        for (obj, l) in golden_objects() {
            for version in [VERSION_3, VERSION_4, VERSION_5, VERSION_6] {
                let stored = encode_version(&obj, &l, version).unwrap();
                let end = stored.len() - CRC_LEN - if version >= VERSION_4 { CHECK_LEN } else { 0 };
                // The raw-bit stream is the payload's last section.
                let raw_len =
                    u64::from_le_bytes(stored[FIXED_HEADER_V2 - 8..FIXED_HEADER_V2].try_into().unwrap());
                let raw_at = end - raw_len as usize;
                for i in raw_at..end {
                    for bit in 0..8 {
                        let mut bad = stored.clone();
                        bad[i] ^= 1 << bit;
                        match (version, decode(Codec::Cold, &recrc(bad), obj.len())) {
                            (VERSION_3, Ok(out)) if out != obj => silent_v3 += 1,
                            (VERSION_4 | VERSION_5 | VERSION_6, Ok(out)) => {
                                assert!(out == obj, "version {version} byte {i} bit {bit} decoded")
                            }
                            (VERSION_4, Err(Error::Codec { reason }))
                                if reason.contains("stored checksum") =>
                            {
                                refused_v4 += 1
                            }
                            (VERSION_5, Err(Error::Codec { reason }))
                                if reason.contains("stored checksum") =>
                            {
                                refused_v5 += 1
                            }
                            (VERSION_6, Err(Error::Codec { reason }))
                                if reason.contains("stored checksum") =>
                            {
                                refused_v6 += 1
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        assert!(silent_v3 > 100, "{silent_v3}");
        assert_eq!(refused_v4, silent_v3);
        assert!(refused_v5 > 100, "{refused_v5}");
        assert!(refused_v6 > 100, "{refused_v6}");
    }

    /// Version 6's segments: rows shorter than [`SEGMENTS`] (empty segments), of lengths that
    /// [`SEGMENTS`] does not divide, and long enough for the vector MED to take 1 to 3 blocks
    /// and leave 0 to 7 steps to the scalar loop; 8- and 16-bit, 1 to 4 channels. The vector
    /// and portable decoders give back the object, and version 5 of the same object too.
    #[test]
    fn version_6_rows_in_segments_roundtrip() {
        let mut seed = 20;
        for cols in [1usize, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 71, 72, 73, 79, 80, 81, 95, 150, 203, 259] {
            for (bps, spp) in [(1u8, 1u16), (2, 1), (2, 2), (1, 3), (2, 4)] {
                seed += 1;
                let span = image(seed, cols, 6, spp as usize, bps as usize, false, false, false);
                let (obj, l) = object(seed, 16, &span, 3, native(bps, false, cols as u32, spp, false));
                for version in [VERSION_6, VERSION_5] {
                    let stored = encode_version(&obj, &l, version).unwrap();
                    assert_eq!(stored[3], version);
                    let what = format!("version {version}, {cols} columns, bps {bps}, spp {spp}");
                    assert!(decode(Codec::Cold, &stored, obj.len()).unwrap() == obj, "{what}");
                    assert!(decode_portable(&stored, obj.len()).unwrap() == obj, "portable, {what}");
                }
            }
        }
        // A last row shorter than the others, long enough that its segments take the vector
        // loop too (150 columns: 18-19 a segment; the last row 100 or 131: 12-13 and 16-17).
        let span = image(77, 150, 5, 1, 2, false, false, false);
        for len in [span.len() - 100, span.len() - 38] {
            let (obj, l) = object(5, 16, &span[..len], 3, native(2, false, 150, 1, false));
            let stored = encode_version(&obj, &l, VERSION_6).unwrap();
            assert!(decode(Codec::Cold, &stored, obj.len()).unwrap() == obj, "last row of {len}");
            assert!(decode_portable(&stored, obj.len()).unwrap() == obj, "portable, last row of {len}");
        }
    }

    /// The encoder's residuals of version 6: each segment's first sample against N (in the
    /// first row against the middle of the range, as the row's first), the others against MED,
    /// so that only the rows above join the segments.
    #[test]
    fn version_6_predicts_segment_starts_from_above() {
        let (w, lo, hi) = (37, 0, 1000);
        let rows: [Vec<i32>; 2] =
            [(0..w as i32).map(|x| 300 + 7 * x).collect(), (0..w as i32).map(|x| 310 + 5 * x).collect()];
        let mut c = MedChannel::new((lo, hi), w, true);
        let mut plain = MedChannel::new((lo, hi), w, false);
        let starts = segment_starts(w);
        assert_eq!(starts, [0, 4, 9, 13, 18, 23, 27, 32, 37]);
        for (r, row) in rows.iter().enumerate() {
            for m in [&mut c, &mut plain] {
                m.cur[1..w + 1].copy_from_slice(row);
                m.residuals(r, w);
            }
            for i in 0..w {
                let want = if starts[1..SEGMENTS].contains(&i) {
                    row[i] - if r == 0 { lo + (hi - lo) / 2 } else { rows[0][i] }
                } else {
                    plain.res[i]
                };
                assert_eq!(c.res[i], want, "row {r} sample {i}");
                assert_eq!(c.mcur[2 + i], want.unsigned_abs());
            }
            c.next_row();
            plain.next_row();
        }
    }

    /// A decode into a reused buffer (longer or shorter, stale bytes) writes every byte.
    #[test]
    fn decode_into_reused_buffers() {
        for (obj, stored) in sample_stored() {
            for stale in [0, obj.len() / 2, obj.len(), obj.len() + 999] {
                let mut out = vec![0xA5; stale];
                crate::codec::decode_into(Codec::Cold, &stored, obj.len(), &mut out).unwrap();
                assert!(out == obj, "stale {stale}");
            }
        }
    }

    /// Versions 2 to 4's own streams, corrupt: the table section (plain, so that the mutations
    /// reach its reader rather than zstd's), the rANS and raw-bit streams. Errors, never panics,
    /// through both compilations of the decoder.
    #[test]
    fn corrupt_rans_streams_are_errors() {
        let mut rng = Rng(11);
        // Rows of 9 samples, of 40 (version 5's vector decoder takes 32 of them) and of 150
        // (version 6's segments of 18-19 take its vector MED loop).
        let geometry = |columns| Geometry {
            bps: 2,
            channels: 2,
            big_endian: false,
            signed: false,
            transform: false,
            columns,
            pixels: columns * 7,
        };
        let infos = vec![ChanInfo { lo: 0, hi: 4095, values: Vec::new() }; 2];
        // A valid section: two tables, contexts alternating between them.
        let mut section = vec![2, 0];
        section.extend((0..2 * CTX_PER_CHANNEL).map(|c| (c % 2) as u8));
        section.extend_from_slice(&[5, 30, 20, 0, 9, 1]);
        section.extend_from_slice(&[NTOK as u8]);
        section.extend((0..NTOK).map(|t| (t % 40) as u8 + 1));
        assert!(read_tables(&section, 2).is_ok());
        assert!(read_tables(&section, 1).is_err());
        for round in 0..3000 {
            let mut tables = section.clone();
            if round % 2 == 0 {
                for _ in 0..=rng.below(3) {
                    let i = rng.below(tables.len());
                    tables[i] = rng.next() as u8;
                }
                if round % 10 == 0 {
                    tables.truncate(rng.below(tables.len()));
                }
            }
            let (rans_len, raw_len) = (rng.below(400), rng.below(200));
            let (rans, raw) = (rng.bytes(rans_len), rng.bytes(raw_len));
            let streams = (&tables[..], &rans[..], &raw[..]);
            let g = geometry([9, 40, 150][round % 3]);
            let mut out = vec![0u8; g.body_len()];
            assert!(decode_pixels_rans::<2>(streams, &g, &infos, false, &mut out).is_err());
            assert!(decode_pixels_rans::<4>(streams, &g, &infos, false, &mut out).is_err());
            assert!(decode_pixels_body::<2, false>(streams, &g, &infos, false, &mut out).is_err());
            assert!(decode_pixels_body::<4, false>(streams, &g, &infos, false, &mut out).is_err());
            // Versions 5 and 6.
            for split in [false, true] {
                assert!(decode_pixels_rans::<32>(streams, &g, &infos, split, &mut out).is_err());
                assert!(decode_pixels_body::<32, false>(streams, &g, &infos, split, &mut out).is_err());
            }
        }
        // Mutations of real streams, CRC fixed up: in the payload, past the header.
        for (obj, stored) in sample_stored().into_iter().filter(|(_, s)| s[3] != VERSION_1) {
            let body = stored.len() - CRC_LEN;
            for _ in 0..2000 {
                let mut bad = stored.clone();
                for _ in 0..=rng.below(2) {
                    let i = FIXED_HEADER_V2 + rng.below(body - FIXED_HEADER_V2);
                    bad[i] ^= 1 << rng.below(8);
                }
                let crc = crc32fast::hash(&bad[..body]);
                bad[body..].copy_from_slice(&crc.to_le_bytes());
                let fast = decode(Codec::Cold, &bad, obj.len());
                if let Ok(out) = &fast {
                    assert_eq!(out.len(), obj.len());
                }
                let portable = decode_portable(&bad, obj.len());
                assert_eq!(fast.is_ok(), portable.is_ok());
                if let (Ok(a), Ok(b)) = (fast, portable) {
                    assert!(a == b);
                }
            }
        }
    }

    /// Real slices (pydicom's CT and MR, rows of 128 and 64 samples: versions 5 and 6's vector
    /// decoders) damaged in their pixel streams, CRC made right: each decode errs or gives back
    /// the object (the checksum), never panics; the vector and portable decoders agree.
    #[test]
    fn damaged_real_version_5_and_6_slices_never_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.venv/lib/python3.11/site-packages/pydicom/data/test_files");
        let mut rng = Rng(5);
        let mut tried = 0;
        for name in ["CT_small.dcm", "MR_small.dcm"] {
            let Ok(data) = std::fs::read(dir.join(name)) else {
                eprintln!("{name} not found under {}: skipped", dir.display());
                continue;
            };
            let p = crate::parse::parse_file(&data, crate::parse::INDEX_TAGS).unwrap();
            let l = crate::object::pixel_layout(p.pixel.as_ref().unwrap(), p.dataset_offset).unwrap();
            for version in [VERSION_5, VERSION_6] {
                let stored = encode_cold_version(&data, &l, version).unwrap();
                let body = stored.len() - CRC_LEN;
                for _ in 0..400 {
                    let mut bad = stored.clone();
                    for _ in 0..=rng.below(3) {
                        let i = FIXED_HEADER_V2 + rng.below(body - FIXED_HEADER_V2);
                        bad[i] = match rng.below(2) {
                            0 => bad[i] ^ (1 << rng.below(8)),
                            _ => rng.next() as u8,
                        };
                    }
                    let bad = recrc(bad);
                    let fast = decode(Codec::Cold, &bad, data.len());
                    let portable = decode_portable(&bad, data.len());
                    assert_eq!(fast.is_ok(), portable.is_ok());
                    if let (Ok(a), Ok(b)) = (fast, portable) {
                        assert!(a == data && b == data, "a damaged {name} decoded to other bytes");
                    }
                    tried += 1;
                }
            }
        }
        assert!(tried == 0 || tried == 1600);
    }

    /// [`decode_cold_into`] with the portable compilation of the rANS decoder (what CPUs without
    /// AVX2/BMI2 run): the tests compare it with the dispatched one.
    fn decode_portable(stored: &[u8], logical_len: usize) -> Result<Vec<u8>> {
        PORTABLE.with(|p| p.set(true));
        let mut out = Vec::new();
        let r = decode_cold_into(stored, logical_len, true, &mut out);
        PORTABLE.with(|p| p.set(false));
        r.map(|_| out)
    }

    #[test]
    fn range_coder_and_bit_stream_roundtrip() {
        let mut rng = Rng(5);
        let bits: Vec<(u32, u32)> =
            (0..20_000).map(|_| ((rng.below(100) < 90) as u32, rng.below(3) as u32)).collect();
        let mut enc = Encoder { rc: RangeEncoder::new(0), bits: BitWriter::new(0) };
        let mut probs = [Prob::NEW; 3];
        let raws: Vec<(u32, u32)> =
            (0..5000).map(|i| (i % 24 + 1, rng.next() as u32 & ((1 << (i % 24 + 1)) - 1))).collect();
        for (i, &(b, c)) in bits.iter().enumerate() {
            enc.bit(&mut probs[c as usize], b);
            if let Some(&(n, v)) = raws.get(i) {
                enc.raw(n, v);
            }
        }
        let (ac, raw) = (enc.rc.finish(), enc.bits.finish());
        assert!(ac.len() < bits.len() / 8 / 2, "adaptive coding compresses skewed bits");
        let mut dec = Decoder { rc: RangeDecoder::new(&ac), bits: BitReader::new(&raw) };
        let mut probs = [Prob::NEW; 3];
        for (i, &(b, c)) in bits.iter().enumerate() {
            assert_eq!(dec.bit(&mut probs[c as usize], 0), b);
            if let Some(&(n, v)) = raws.get(i) {
                assert_eq!(dec.raw(n, 0), v);
            }
        }
        assert!(!dec.rc.overrun() && !dec.bits.overrun());
        dec.bits.get(24);
        dec.bits.get(24);
        assert!(dec.bits.overrun());
    }
}
