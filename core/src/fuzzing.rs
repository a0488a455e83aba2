//! The bodies of the fuzz targets: every parser that reads bytes from outside (a file, a peer, a
//! stored blob), driven with arbitrary input. Each must return (an error is fine) and never
//! panic, hang or allocate without bound; the round-trip targets also check that what comes back
//! is what went in.
//!
//! They live in the crate, not in `core/fuzz/`, so that two harnesses share them: cargo-fuzz
//! (`make fuzz`: libFuzzer, coverage-guided, nightly, with AddressSanitizer) and the smoke test
//! in `make test` (the seed corpus and deterministic mutations of it, on stable, in seconds).
//! A crash found by either becomes a file under `core/fuzz/regressions/<target>/`, which the
//! smoke test replays for ever after.

use std::collections::HashMap;

use crate::codec::{self, cold, Codec, PixelLayout};
use crate::net::assembler::{Assembler, Out};
use crate::net::command::{self, C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ};
use crate::net::conn::{Conn, Wait};
use crate::net::pdu;
use crate::object;
use crate::parse::{self, INDEX_TAGS};

/// The largest object a target lets a decoder produce (bounded memory under the fuzzer).
const MAX_LOGICAL: usize = 16 << 20;

/// A fuzz target: takes any bytes, returns normally or panics on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as `core/fuzz/fuzz_targets/<name>.rs` and the smoke test call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("dicom_parse", dicom_parse),
    ("pdu_stream", pdu_stream),
    ("conn_stream", conn_stream),
    ("codec_decode", codec_decode),
    ("cold_roundtrip", cold_roundtrip),
];

/// A Part-10 file or a bare data set: parsed as a file, as a data set in each transfer syntax
/// a peer can name, and prepared for storage when it parses.
pub fn dicom_parse(data: &[u8]) {
    if parse::parse_file(data, INDEX_TAGS).is_ok() {
        let _ = object::prepare_file_with(data, INDEX_TAGS, Codec::Raw, 1);
    }
    for ts in [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.70",
    ] {
        let _ = parse::parse_dataset(data, ts, INDEX_TAGS);
    }
}

/// Bytes from a peer's socket: cut into PDUs as the connection does (6-byte header, length
/// bounded by our maximum PDU size) and reassembled into DIMSE messages; and the same bytes as
/// a command set.
pub fn pdu_stream(data: &[u8]) {
    // A small data set limit, so that the drop-and-count path of an oversize C-STORE runs too.
    let mut asm = fuzz_assembler(4096);
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= pdu::HEADER_LEN {
        let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        if len > 1 << 20 || rest.len() < pdu::HEADER_LEN + len {
            break;
        }
        asm.feed(&rest[..pdu::HEADER_LEN + len], &mut out);
        rest = &rest[pdu::HEADER_LEN + len..];
    }
    let _ = command::decode(data);
}

/// The reassembler the network targets drive: C-STORE and C-ECHO fast on context 1, C-FIND
/// (any status) on 3, data sets up to `limit` bytes (0: no limit).
fn fuzz_assembler(limit: usize) -> Assembler {
    let fast: HashMap<u8, Vec<u16>> = [(1, vec![C_STORE_RQ, C_ECHO_RQ]), (3, vec![C_FIND_RQ])].into();
    Assembler::new(fast).with_any_status([3]).with_max_data_set(limit)
}

/// Protocol errors compared by kind: the reader words its own (a PDU over its length bound).
fn kinds(out: Vec<Out>) -> Vec<Out> {
    out.into_iter()
        .map(|o| if let Out::ProtocolError(_) = o { Out::ProtocolError(String::new()) } else { o })
        .collect()
}

/// Bytes from a peer's socket as the connection reads them: the first two bytes choose how the
/// rest is cut into writes (pseudo-random pieces up to 64 KiB) and a data set size limit, the
/// rest is the stream. [`Conn`] reads it from a socket pair after each write, receiving large
/// data-set fragments straight into their data sets where it can; what comes out must be
/// exactly what [`Assembler::feed`] makes of the same whole PDUs.
pub fn conn_stream(data: &[u8]) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    if data.len() < 2 {
        return;
    }
    let (knobs, wire) = data.split_at(2);
    let limit = if knobs[0] & 1 == 0 { 0 } else { 80_000 };
    // At most ~2,000 writes a run; never more than the socket holds unread (the reader drains it
    // after each write).
    let max_piece = (1 + usize::from(knobs[1]) * 256).max(wire.len() / 2048 + 1).min(64 << 10);
    let (bound, conn_max_pdu) = (16usize << 20, 16_384);

    let mut want = Vec::new();
    let mut reference = fuzz_assembler(limit);
    let mut rest = wire;
    while rest.len() >= pdu::HEADER_LEN {
        let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        if len > bound {
            want.push(Out::ProtocolError(String::new()));
            break;
        }
        if rest.len() < pdu::HEADER_LEN + len {
            break;
        }
        reference.feed(&rest[..pdu::HEADER_LEN + len], &mut want);
        rest = &rest[pdu::HEADER_LEN + len..];
    }

    let (tx, rx) = UnixStream::pair().expect("a socket pair");
    let mut conn = Conn::new(rx.as_raw_fd(), conn_max_pdu, fuzz_assembler(limit));
    let mut got = Vec::new();
    let mut closed = false;
    let drain = |conn: &mut Conn, got: &mut Vec<Out>| loop {
        let (out, wait) = conn.next(None, Duration::ZERO);
        got.extend(out);
        match wait {
            Wait::Ready => continue,
            Wait::Closed(_) => return true,
            Wait::Timeout | Wait::Woken => return false,
        }
    };
    let (mut x, mut at) = (u64::from(u16::from_le_bytes([knobs[0], knobs[1]])) | 1 << 32, 0);
    while at < wire.len() && !closed {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (1 + (x as usize) % max_piece).min(wire.len() - at);
        (&tx).write_all(&wire[at..at + n]).expect("the socket takes a piece the reader drained room for");
        at += n;
        closed = drain(&mut conn, &mut got);
    }
    drop(tx);
    while !closed {
        closed = drain(&mut conn, &mut got);
    }
    assert!(kinds(got) == kinds(want), "the connection's messages differ from the assembler's");
}

/// A stored blob read back from a volume or an object store: the first byte picks the codec,
/// the next four the length it claims to decode to. Whatever decodes has exactly that length.
/// With the first byte's top bit set, a cold stream's trailing CRC-32 is made right first:
/// otherwise nearly every mutation stops at the checksum, and the decoder's handling of a
/// stream damaged where its CRC still matches (tables, rANS words, raw bits, the vector MED
/// loop of long rows) is never reached.
pub fn codec_decode(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let codec = match (data[0] & 0x7F) % 3 {
        0 => Codec::Raw,
        1 => Codec::Hot,
        _ => Codec::Cold,
    };
    let logical_len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize % MAX_LOGICAL;
    let mut stored = std::borrow::Cow::Borrowed(&data[5..]);
    if data[0] & 0x80 != 0 && codec == Codec::Cold && stored.len() >= 4 {
        let s = stored.to_mut();
        let body = s.len() - 4;
        let crc = crc32fast::hash(&s[..body]);
        s[body..].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(out) = codec::decode(codec, &stored, logical_len) {
        assert_eq!(out.len(), logical_len, "{codec:?} decoded to another length than it claimed");
    }
}

/// Any image the cold codec accepts comes back bit for bit: the first bytes choose the layout
/// (bytes per sample, byte order, columns, samples per pixel, planar), the rest is the pixels.
pub fn cold_roundtrip(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (knobs, pixels) = data.split_at(4);
    let bps = if knobs[0] & 1 == 0 { 1 } else { 2 };
    let big_endian = knobs[0] & 2 != 0;
    let spp = if knobs[0] & 4 == 0 { 1 } else { 3 };
    let planar = knobs[0] & 8 != 0;
    let columns = u32::from(u16::from_le_bytes([knobs[1], knobs[2]])) % 1024 + 1;
    let head = usize::from(knobs[3] % 16);
    if pixels.len() < head {
        return;
    }
    let layout = PixelLayout::native(head, pixels.len() - head, bps, big_endian, columns, spp, planar);
    if cold::cold_support(pixels.len(), Some(&layout)).is_some() {
        return;
    }
    // The format written today (version 6) and version 2, whose encoder is kept for this.
    let versions = [cold::encode_cold_only(pixels, &layout), cold::encode_cold_version(pixels, &layout, 2)];
    for stored in versions.into_iter().flatten() {
        let back =
            codec::decode(Codec::Cold, &stored, pixels.len()).expect("the cold codec's own output decodes");
        assert!(back == pixels, "cold round trip changed the bytes");
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::testutil::Rng;

    /// One mutation of the kinds libFuzzer starts with: flip bits, set a byte to an edge value,
    /// overwrite a little-endian length with a huge one, cut, duplicate or drop a run.
    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            if v.is_empty() {
                v.push(rng.next() as u8);
                continue;
            }
            let at = rng.below(v.len());
            match rng.below(6) {
                0 => v[at] ^= 1 << rng.below(8),
                1 => v[at] = [0, 0x7F, 0x80, 0xFF][rng.below(4)],
                2 => {
                    let huge = [0xFFFF_FFFFu32, 0xFFFF_FFFE, 0x8000_0000, 0x0000_FFFF][rng.below(4)];
                    for (i, b) in huge.to_le_bytes().iter().enumerate() {
                        if at + i < v.len() {
                            v[at + i] = *b;
                        }
                    }
                }
                3 => v.truncate(at),
                4 => {
                    let end = (at + 1 + rng.below(64)).min(v.len());
                    let run = v[at..end].to_vec();
                    v.splice(at..at, run);
                }
                _ => {
                    let end = (at + 1 + rng.below(64)).min(v.len());
                    v.drain(at..end);
                }
            }
        }
        v
    }

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The real test files (pydicom's, in the repository's `.venv`) and the checked-in seeds of
    /// each target; at most `max` bytes each, to keep the smoke test quick.
    fn seeds(target: &str, max: usize) -> Vec<Vec<u8>> {
        let mut dirs = vec![repo().join("core/fuzz/seeds").join(target)];
        if target == "dicom_parse" {
            dirs.push(repo().join(".venv/lib/python3.11/site-packages/pydicom/data/test_files"));
        }
        files_in(&dirs, max)
    }

    /// Every file directly in `dirs` of at most `max` bytes, in name order.
    fn files_in(dirs: &[PathBuf], max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if p.is_file() && p.metadata().is_ok_and(|m| m.len() as usize <= max) {
                    if let Ok(b) = std::fs::read(&p) {
                        out.push(b);
                    }
                }
            }
        }
        out
    }

    /// Seeds a target gets when the repository has none for it: built here from the crate's own
    /// encoders, so that mutations start from valid input.
    fn built_seeds(target: &str) -> Vec<Vec<u8>> {
        let image: Vec<u8> = (0..64 * 48 * 2).map(|i| ((i * 7) % 251) as u8).collect();
        match target {
            "dicom_parse" => {
                // A bare Explicit VR Little Endian data set: the UIDs, a patient, 16x16 pixels.
                let mut ds = Vec::new();
                let mut put = |group: u16, elem: u16, vr: &[u8; 2], value: &[u8]| {
                    ds.extend_from_slice(&group.to_le_bytes());
                    ds.extend_from_slice(&elem.to_le_bytes());
                    ds.extend_from_slice(vr);
                    if vr == b"OW" {
                        ds.extend_from_slice(&[0, 0]);
                        ds.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    } else {
                        ds.extend_from_slice(&(value.len() as u16).to_le_bytes());
                    }
                    ds.extend_from_slice(value);
                };
                put(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0");
                put(0x0008, 0x0018, b"UI", b"1.2.3.4.5");
                put(0x0010, 0x0020, b"LO", b"PAT1");
                put(0x0020, 0x000D, b"UI", b"1.2.3.4");
                put(0x0020, 0x000E, b"UI", b"1.2.3.4.1.");
                put(0x0028, 0x0010, b"US", &16u16.to_le_bytes());
                put(0x0028, 0x0011, b"US", &16u16.to_le_bytes());
                put(0x0028, 0x0100, b"US", &16u16.to_le_bytes());
                put(0x7FE0, 0x0010, b"OW", &image[..512]);
                vec![ds]
            }
            "pdu_stream" => {
                let cmd = command::encode_response(&command::ResponseFields {
                    command_field: 0x8001,
                    message_id_being_responded_to: 1,
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
                    sop_instance_uid: "1.2.3.4",
                    status: 0,
                    error_comment: "",
                });
                vec![
                    pdu::message_pdus(1, &cmd, Some(&image[..300]), 128),
                    pdu::message_pdus(3, &cmd, None, 0),
                ]
            }
            "conn_stream" => {
                // Two C-STOREs as storescu sends them (command, then one PDV a PDU), the second
                // over the 80 KB limit when the first knob byte is odd; an echo between them.
                let store = |id: u16, len: usize| {
                    let mut cmd = Vec::new();
                    let mut put = |elem: u16, value: &[u8]| {
                        cmd.extend_from_slice(&0u16.to_le_bytes());
                        cmd.extend_from_slice(&elem.to_le_bytes());
                        cmd.extend_from_slice(&(value.len() as u32).to_le_bytes());
                        cmd.extend_from_slice(value);
                    };
                    put(0x0002, b"1.2.840.10008.5.1.4.1.1.2\0");
                    put(0x0100, &C_STORE_RQ.to_le_bytes());
                    put(0x0110, &id.to_le_bytes());
                    put(0x0700, &0u16.to_le_bytes());
                    put(0x0800, &0u16.to_le_bytes());
                    put(0x1000, b"1.2.3.4\0");
                    let mut group = Vec::new();
                    group.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
                    group.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
                    group.extend(cmd);
                    let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
                    pdu::message_pdus(1, &group, Some(&data), 32_768)
                };
                let echo = command::encode_response(&command::ResponseFields {
                    command_field: C_ECHO_RQ,
                    message_id_being_responded_to: 0,
                    sop_class_uid: "1.2.840.10008.1.1",
                    sop_instance_uid: "",
                    status: 0,
                    error_comment: "",
                });
                let mut stream = vec![0u8, 40];
                stream.extend(store(1, 70_000));
                stream.extend(pdu::message_pdus(1, &echo, None, 0));
                stream.extend(store(2, 90_000));
                let mut odd = stream.clone();
                odd[0] = 1;
                odd[1] = 3;
                vec![stream, odd]
            }
            "codec_decode" => {
                let layout = PixelLayout::native(0, image.len(), 2, false, 64, 1, false);
                // 150 columns: the segments of format 6's rows (18-19 samples) take its vector loop.
                let long_rows = PixelLayout::native(0, image.len(), 2, false, 150, 1, false);
                let mut out = Vec::new();
                for (id, enc) in [
                    (1u8, codec::encode_hot(&image, Some(&layout), 1).map(|x| x.1)),
                    (2, cold::encode_cold_only(&image, &layout)),
                    (2, cold::encode_cold_version(&image, &layout, 2)),
                    (0x82, cold::encode_cold_only(&image, &long_rows)),
                ] {
                    let mut s = vec![id];
                    s.extend_from_slice(&(image.len() as u32).to_le_bytes());
                    s.extend(enc.expect("encodes"));
                    out.push(s);
                }
                out
            }
            "cold_roundtrip" => {
                let mut s = vec![1u8, 63, 0, 0];
                s.extend_from_slice(&image);
                vec![s]
            }
            _ => Vec::new(),
        }
    }

    /// Writes the built seeds to `core/fuzz/seeds/<target>/`, where `make fuzz` starts from them
    /// (`cargo test -p dicomvault-core --release write_fuzz_seeds -- --ignored`).
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        for &(name, _) in TARGETS {
            let dir = repo().join("core/fuzz/seeds").join(name);
            std::fs::create_dir_all(&dir).expect("seed folder");
            for (i, s) in built_seeds(name).iter().enumerate() {
                std::fs::write(dir.join(format!("built-{i}")), s).expect("seed file");
            }
        }
    }

    #[test]
    fn every_target_survives_its_seeds_mutated_and_every_recorded_regression() {
        for &(name, target) in TARGETS {
            let regressions = files_in(&[repo().join("core/fuzz/regressions").join(name)], usize::MAX);
            for r in &regressions {
                target(r);
            }
            let mut corpus = seeds(name, 256 << 10);
            if corpus.is_empty() {
                corpus.extend(built_seeds(name));
            }
            assert!(!corpus.is_empty(), "no seeds for {name}");
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
            // conn_stream runs a socket pair and a few hundred system calls a run
            let rounds = if name == "conn_stream" { 300 } else { 3000 };
            for i in 0..rounds {
                let seed = &corpus[i % corpus.len()];
                target(seed);
                target(&mutate(&mut rng, seed));
            }
            eprintln!(
                "{name}: {} seeds, {} regressions, {} mutations",
                corpus.len(),
                regressions.len(),
                rounds
            );
        }
    }
}
