//! The hot codec's inverse filter for 1- and 2-byte samples without subtract-green (every
//! grey-scale image): byte planes -> samples in one pass per row, written straight into the
//! object, the row above read back from what was just written.
//!
//! Why: the decoder's running sum (one dependent add per sample) and the row buffers it went
//! through cost about a quarter of a C-GET's server CPU on a CT study. Here unzigzag, the
//! running sum, the row above and the byte order are one pass. On x86-64-v3 CPUs (chosen at run
//! time, like the cold codec's decoder) 16-bit rows go through SSE registers 8 samples at a
//! time: the running sum is a log-step scan in the register (wrapping adds are associative, so
//! the result is bit-identical), whose only serial step is one broadcast add per 8 samples.
//! LLVM does not vectorise the scan by itself (it rewrites it into scalar adds), hence the
//! intrinsics; everything else, and every CPU without them, takes the portable loops.

use super::{load, Predictor, Sample};

/// Decodes `n` samples from their planes (`lo`: least significant bytes; `hi`: most
/// significant ones, empty for 1-byte samples) into `out` (`n * T::BYTES` bytes).
/// `left` is the distance to the left neighbour, `row` the row length, both in samples.
pub(super) fn decode_planes<T: Sample, const BE: bool>(
    lo: &[u8],
    hi: &[u8],
    left: usize,
    row: usize,
    pred: Predictor,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if T::BYTES == 2 && super::cold::x86_v3() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::decode_planes_u16::<BE>(lo, hi, left, row, pred, out) };
    }
    decode_planes_body::<T, BE>(lo, hi, left, row, pred, out)
}

#[inline(always)]
pub(super) fn decode_planes_body<T: Sample, const BE: bool>(
    lo: &[u8],
    hi: &[u8],
    left: usize,
    row: usize,
    pred: Predictor,
    out: &mut [u8],
) {
    let n = lo.len();
    assert!(out.len() == n * T::BYTES && (T::BYTES == 1 || hi.len() == n) && row >= 1 && left >= 1);
    let mut start = 0;
    while start < n {
        let end = (start + row).min(n);
        let (done, rest) = out.split_at_mut(start * T::BYTES);
        let dst = &mut rest[..(end - start) * T::BYTES];
        let hi = if T::BYTES > 1 { &hi[start..end] } else { &[][..] };
        let up = (start > 0).then(|| &done[(start - row) * T::BYTES..(end - row) * T::BYTES]);
        // Gradient and Up rows have a row above; the first row, and the 1-D filter's single
        // row, are a running sum of the residuals (see `residuals`).
        let sum = up.is_none() || pred != Predictor::Up;
        row_of::<T, BE>(&lo[start..end], hi, up, left, sum, dst);
        start = end;
    }
}

#[inline(always)]
fn residual<T: Sample>(lo: &[u8], hi: &[u8], i: usize) -> T {
    if T::BYTES == 1 {
        T::from_planes(&[lo[i]]).unzigzag()
    } else {
        T::from_planes(&[lo[i], hi[i]]).unzigzag()
    }
}

#[inline(always)]
fn store<T: Sample, const BE: bool>(b: &mut [u8], i: usize, v: T) {
    let s = &mut b[i * T::BYTES..(i + 1) * T::BYTES];
    if BE {
        v.write_be(s)
    } else {
        v.write_le(s)
    }
}

/// One row: `dst[i] = up[i] + (running sum with distance left of the residuals)[i]`, without
/// the sum when `!sum`, without `up` on the first row.
#[inline(always)]
pub(super) fn row_of<T: Sample, const BE: bool>(
    lo: &[u8],
    hi: &[u8],
    up: Option<&[u8]>,
    left: usize,
    sum: bool,
    dst: &mut [u8],
) {
    let len = lo.len();
    if left != 1 && sum {
        // Interleaved samples (one sum per channel): not a hot path, one add per sample.
        for i in 0..len {
            let mut v = residual::<T>(lo, hi, i);
            if i >= left {
                let (a, c) = (load::<T, BE>(dst, i - left), up.map(|u| load::<T, BE>(u, i - left)));
                v = v.wadd(c.map_or(a, |c| a.wsub(c)));
            }
            store::<T, BE>(dst, i, up.map_or(v, |u| v.wadd(load::<T, BE>(u, i))));
        }
        return;
    }
    let mut carry = T::default();
    for i in 0..len {
        let mut v = residual::<T>(lo, hi, i);
        if sum {
            carry = carry.wadd(v);
            v = carry;
        }
        store::<T, BE>(dst, i, up.map_or(v, |u| v.wadd(load::<T, BE>(u, i))));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{row_of, Predictor};

    /// [`super::decode_planes_body`] for 16-bit samples: rows with a distance-1 running sum, or
    /// none, 8 samples per SSE register.
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt")]
    pub(super) fn decode_planes_u16<const BE: bool>(
        lo: &[u8],
        hi: &[u8],
        left: usize,
        row: usize,
        pred: Predictor,
        out: &mut [u8],
    ) {
        let n = lo.len();
        assert!(out.len() == 2 * n && hi.len() == n && row >= 1 && left >= 1);
        let mut start = 0;
        while start < n {
            let end = (start + row).min(n);
            let (done, rest) = out.split_at_mut(2 * start);
            let dst = &mut rest[..2 * (end - start)];
            let up = (start > 0).then(|| &done[2 * (start - row)..2 * (end - row)]);
            let sum = up.is_none() || pred != Predictor::Up;
            let (lo, hi) = (&lo[start..end], &hi[start..end]);
            if left == 1 || !sum {
                row_u16::<BE>(lo, hi, up, sum, dst);
            } else {
                row_of::<u16, BE>(lo, hi, up, left, sum, dst);
            }
            start = end;
        }
    }

    fn le8(b: &[u8]) -> i64 {
        i64::from_le_bytes(b.try_into().expect("8 bytes"))
    }

    /// 16 bytes as a register (two 8-byte loads, which LLVM merges).
    #[target_feature(enable = "avx2")]
    fn load16(b: &[u8]) -> __m128i {
        _mm_set_epi64x(le8(&b[8..16]), le8(&b[..8]))
    }

    #[target_feature(enable = "avx2")]
    fn store16(b: &mut [u8], v: __m128i) {
        b[..8].copy_from_slice(&_mm_cvtsi128_si64(v).to_le_bytes());
        b[8..16].copy_from_slice(&_mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)).to_le_bytes());
    }

    #[target_feature(enable = "avx2")]
    fn swap_bytes(v: __m128i) -> __m128i {
        _mm_or_si128(_mm_slli_epi16::<8>(v), _mm_srli_epi16::<8>(v))
    }

    /// One row of 16-bit samples (see [`super::row_of`] with `left` 1).
    #[target_feature(enable = "avx2")]
    fn row_u16<const BE: bool>(lo: &[u8], hi: &[u8], up: Option<&[u8]>, sum: bool, dst: &mut [u8]) {
        let len = lo.len();
        let whole = len - len % 8;
        let one = _mm_set1_epi16(1);
        // every lane holds the running sum of the samples before the block
        let mut carry = _mm_setzero_si128();
        for b in (0..whole).step_by(8) {
            let z = _mm_unpacklo_epi8(
                _mm_cvtsi64_si128(le8(&lo[b..b + 8])),
                _mm_cvtsi64_si128(le8(&hi[b..b + 8])),
            );
            // unzigzag: (z >> 1) ^ -(z & 1)
            let mut v = _mm_xor_si128(
                _mm_srli_epi16::<1>(z),
                _mm_sub_epi16(_mm_setzero_si128(), _mm_and_si128(z, one)),
            );
            if sum {
                v = _mm_add_epi16(v, _mm_slli_si128::<2>(v));
                v = _mm_add_epi16(v, _mm_slli_si128::<4>(v));
                v = _mm_add_epi16(v, _mm_slli_si128::<8>(v));
                v = _mm_add_epi16(v, carry);
                let last = _mm_shufflehi_epi16::<0xFF>(v);
                carry = _mm_unpackhi_epi64(last, last);
            }
            if let Some(up) = up {
                let u = load16(&up[2 * b..2 * b + 16]);
                v = _mm_add_epi16(v, if BE { swap_bytes(u) } else { u });
            }
            store16(&mut dst[2 * b..2 * b + 16], if BE { swap_bytes(v) } else { v });
        }
        // The last samples (fewer than 8): one at a time, from the carry.
        let mut acc = _mm_cvtsi128_si32(carry) as u16;
        for i in whole..len {
            let z = u16::from_le_bytes([lo[i], hi[i]]);
            let mut v = (z >> 1) ^ 0u16.wrapping_sub(z & 1);
            if sum {
                acc = acc.wrapping_add(v);
                v = acc;
            }
            if let Some(up) = up {
                let u = [up[2 * i], up[2 * i + 1]];
                v = v.wrapping_add(if BE { u16::from_be_bytes(u) } else { u16::from_le_bytes(u) });
            }
            dst[2 * i..2 * i + 2].copy_from_slice(&if BE { v.to_be_bytes() } else { v.to_le_bytes() });
        }
    }
}
