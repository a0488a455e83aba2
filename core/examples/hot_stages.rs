//! Where the hot codec's decode of one object goes, stage by stage, for choosing what to make
//! cheaper (bench/RESULTS.md, "Hot decode per slice").
//!
//! ```sh
//! cargo run --release --example hot_stages -- FILE.dcm...
//! ```
//!
//! Per file, encoded as the archive stores it: the zstd decode of each section (with, per zstd
//! block, its literals: raw bytes, Huffman-coded bytes, and the number of sequences), the
//! XXH3-64 and CRC-32 passes, and the whole decode; the inverse filter is what the whole leaves.
//! Then the same sections re-encoded with raw (not Huffman-coded) literals: their size and
//! decode time, i.e. what the Huffman coding of the literals buys and costs. Times are the best
//! of 5 runs of this thread's CPU time, in microseconds.

use std::time::Duration;

use dicomvault_core::codec::{self, DEFAULT_HOT_LEVEL};
use dicomvault_core::object::pixel_layout;
use dicomvault_core::parse::{self, INDEX_TAGS};
use zstd::zstd_safe::zstd_sys;

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Best of 5 runs of `f` repeated to ~20 ms, in microseconds per call.
fn time(mut f: impl FnMut()) -> f64 {
    let t = cpu_time();
    f();
    let once = (cpu_time() - t).as_secs_f64().max(1e-7);
    let reps = ((0.02 / once) as usize).clamp(1, 100_000);
    (0..5)
        .map(|_| {
            let t = cpu_time();
            for _ in 0..reps {
                f();
            }
            (cpu_time() - t).as_secs_f64() / reps as f64 * 1e6
        })
        .fold(f64::MAX, f64::min)
}

fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes")) as usize
}

/// Per compressed block of a single zstd frame: (literal bytes, their stored size, sequences);
/// the literals' stored size equals their count when they are raw or RLE.
fn blocks(f: &[u8]) -> Vec<(usize, usize, usize)> {
    let fhd = f[4];
    let (single, did, fcs) = ((fhd >> 5) & 1 == 1, fhd & 3, fhd >> 6);
    let mut p =
        5 + usize::from(!single) + [0, 1, 2, 4][did as usize] + [usize::from(single), 2, 4, 8][fcs as usize];
    let mut out = Vec::new();
    loop {
        let bh = u32::from_le_bytes([f[p], f[p + 1], f[p + 2], 0]) as usize;
        let (last, kind, size) = (bh & 1 == 1, (bh >> 1) & 3, bh >> 3);
        let q = p + 3;
        if kind == 2 {
            let (lt, sf) = (f[q] & 3, (f[q] >> 2) & 3);
            let le = |n: usize| f[q..q + n].iter().rev().fold(0usize, |a, &b| a << 8 | b as usize);
            let (lit, clit, seq_at) = if lt >= 2 {
                let (h, n, bits) = match sf {
                    0 | 1 => (le(3), 3, 10),
                    2 => (le(4), 4, 14),
                    _ => (le(5), 5, 18),
                };
                let (r, c) = ((h >> 4) & ((1 << bits) - 1), (h >> (4 + bits)) & ((1 << bits) - 1));
                (r, c, q + n + c)
            } else {
                let (r, n) = match sf {
                    0 | 2 => (f[q] as usize >> 3, 1),
                    1 => (le(2) >> 4, 2),
                    _ => (le(3) >> 4, 3),
                };
                (r, r, q + n + if lt == 0 { r } else { 1 })
            };
            let b0 = f[seq_at] as usize;
            let nseq = match b0 {
                0..=127 => b0,
                128..=254 => ((b0 - 128) << 8) + f[seq_at + 1] as usize,
                _ => u16::from_le_bytes([f[seq_at + 1], f[seq_at + 2]]) as usize + 0x7f00,
            };
            out.push((lit, clit, nseq));
        }
        p = q + if kind == 1 { 1 } else { size };
        if last {
            return out;
        }
    }
}

fn main() {
    // SAFETY: no arguments; checked for null below.
    let raw_lit = unsafe { zstd_sys::ZSTD_createCCtx() };
    assert!(!raw_lit.is_null());
    use zstd_sys::ZSTD_cParameter as C;
    // The archive's settings for the residual planes with the literals left raw
    // (ZSTD_c_literalCompressionMode = ZSTD_ps_disable).
    for (p, v) in [
        (C::ZSTD_c_compressionLevel, DEFAULT_HOT_LEVEL),
        (C::ZSTD_c_minMatch, 7),
        (C::ZSTD_c_hashLog, 12),
        (C::ZSTD_c_targetLength, 16),
        (C::ZSTD_c_experimentalParam5, 2),
    ] {
        // SAFETY: valid context.
        assert_eq!(unsafe { zstd_sys::ZSTD_isError(zstd_sys::ZSTD_CCtx_setParameter(raw_lit, p, v)) }, 0);
    }
    let mut d = zstd::bulk::Decompressor::new().expect("zstd context");
    for f in std::env::args().skip(1) {
        let data = std::fs::read(&f).expect("readable file");
        let p = parse::parse_file(&data, INDEX_TAGS).expect("a DICOM file");
        let layout = p.pixel.as_ref().and_then(|px| pixel_layout(px, p.dataset_offset));
        let (c, stored) = codec::encode_hot(&data, layout.as_ref(), DEFAULT_HOT_LEVEL).expect("encodes");
        println!("{f}: {} bytes, {c:?} {} bytes", data.len(), stored.len());
        if c != codec::Codec::Hot {
            continue;
        }
        // The section table (codec.rs, "Stored format"): 41 fixed bytes, the count last.
        let n = stored[40] as usize;
        let mut at = 41 + 17 * n;
        for i in 0..n {
            let e = 41 + 17 * i;
            let (method, raw, len) = (stored[e], u64_at(&stored, e + 1), u64_at(&stored, e + 9));
            let sec = &stored[at..at + len];
            at += len;
            if method != 1 {
                println!("  section {i}: {raw} bytes stored as they are");
                continue;
            }
            let mut out = vec![0u8; raw];
            let us = time(|| {
                d.decompress_to_buffer(sec, &mut out).expect("decodes");
            });
            let b: Vec<String> =
                blocks(sec).iter().map(|(l, c, s)| format!("{l}->{c} lit, {s} seq")).collect();
            print!("  section {i}: {raw} -> {len} bytes, zstd {us:.1} us [{}]", b.join("; "));
            if raw >= 4096 {
                let mut z = vec![0u8; zstd::zstd_safe::compress_bound(raw)];
                // SAFETY: valid context, buffers of the lengths given.
                let zn = unsafe {
                    zstd_sys::ZSTD_compress2(
                        raw_lit,
                        z.as_mut_ptr().cast(),
                        z.len(),
                        out.as_ptr().cast(),
                        raw,
                    )
                };
                // SAFETY: pure function of the return code.
                assert_eq!(unsafe { zstd_sys::ZSTD_isError(zn) }, 0);
                z.truncate(zn);
                let mut back = vec![0u8; raw];
                let us_raw = time(|| {
                    d.decompress_to_buffer(&z, &mut back).expect("decodes");
                });
                assert!(back == out);
                print!("; raw literals: {zn} bytes, zstd {us_raw:.1} us");
            }
            println!();
        }
        let xxh = time(|| {
            std::hint::black_box(xxhash_rust::xxh3::xxh3_64(std::hint::black_box(&data)));
        });
        let crc = time(|| {
            std::hint::black_box(crc32fast::hash(std::hint::black_box(&stored)));
        });
        let mut out = Vec::new();
        let mut whole = |checked| {
            time(|| {
                codec::decode_checked_into(c, &stored, data.len(), &mut out, checked).expect("decodes");
            })
        };
        let (read, full) = (whole(codec::StoredCrc::RecordChecked), whole(codec::StoredCrc::Unchecked));
        println!(
            "  xxh3 {xxh:.1} us, crc32 {crc:.1} us; whole decode {full:.1} us with the codec's CRC, {read:.1} us without (local reads)"
        );
    }
    // SAFETY: created above, freed once.
    unsafe { zstd_sys::ZSTD_freeCCtx(raw_lit) };
}
