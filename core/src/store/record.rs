//! On-disk record format of a volume file, and the scanner that rebuilds the index from it.
//!
//! A volume is a sequence of records, each starting at an 8-byte aligned offset:
//!
//! ```text
//! off  len  field
//!   0    4  magic "DVR1"
//!   4    1  format version (1)
//!   5    1  flags (bit 0 = DELETED); the only mutable byte, excluded from both checksums
//!   6    1  codec
//!   7    1  reserved (0)
//!   8   32  BLAKE3 hash of the logical bytes
//!  40    8  logical_len (u64 LE)
//!  48    8  stored_len  (u64 LE) = payload length
//!  56    4  header crc32: bytes 0..56 with the flags byte read as 0
//!  60    4  record crc32: bytes 0..60 (flags as 0) followed by the payload
//!  64    n  payload (the stored = encoded bytes)
//!       0-7 zero padding to the next multiple of 8 (not checksummed)
//! ```
//!
//! The header crc protects the lengths on their own, so a scan can step over a record whose
//! payload is damaged without trusting garbage lengths, and a scan can skip payloads with a seek.
//! When a header itself is damaged the scanner resynchronises by looking for the magic at the
//! following 8-byte aligned offsets and accepting a candidate only if both its header crc and its
//! record crc are valid.
//!
//! Alignment is 8 bytes, not 4 KiB: objects are written through the page cache (not O_DIRECT),
//! so 4 KiB alignment would buy nothing and would waste up to 4 KiB per small object (DICOM SR,
//! presentation states and KOs are often 2-20 KB).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::hash::Hash;

pub(crate) const MAGIC: [u8; 4] = *b"DVR1";
pub(crate) const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: u64 = 64;
pub(crate) const ALIGN: u64 = 8;
/// Offset of the flags byte within the header.
pub(crate) const FLAGS_OFFSET: u64 = 5;
pub(crate) const FLAG_DELETED: u8 = 0x01;

/// Size on disk of a record with a payload of `stored_len` bytes (header + payload + padding).
pub(crate) fn record_size(stored_len: u64) -> Option<u64> {
    let raw = HEADER_LEN.checked_add(stored_len)?;
    raw.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// A parsed, header-crc-checked record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub flags: u8,
    pub codec: u8,
    pub hash: Hash,
    pub logical_len: u64,
    pub stored_len: u64,
    pub record_crc: u32,
}

/// Little-endian field readers for fixed layouts (callers have checked the length).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Builds the header for a new record (flags 0) including both checksums. `payload_crc`: the
/// CRC-32 of `head ++ payload` if the caller has it (then the payload is not read again).
pub(crate) fn encode_header(
    codec: u8,
    hash: &Hash,
    logical_len: u64,
    head: &[u8],
    payload: &[u8],
    payload_crc: Option<u32>,
) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = 0;
    h[6] = codec;
    h[8..40].copy_from_slice(hash);
    h[40..48].copy_from_slice(&logical_len.to_le_bytes());
    h[48..56].copy_from_slice(&((head.len() + payload.len()) as u64).to_le_bytes());
    let hcrc = crc32fast::hash(&h[0..56]);
    h[56..60].copy_from_slice(&hcrc.to_le_bytes());
    let mut rc = crc32fast::Hasher::new();
    rc.update(&h[0..60]);
    match payload_crc {
        Some(c) => {
            rc.combine(&crc32fast::Hasher::new_with_initial_len(c, (head.len() + payload.len()) as u64))
        }
        None => {
            rc.update(head);
            rc.update(payload);
        }
    }
    h[60..64].copy_from_slice(&rc.finalize().to_le_bytes());
    h
}

/// Parses and checks a header (magic, version, header crc). Does not look at the payload.
pub(crate) fn parse_header(b: &[u8]) -> Result<Header, &'static str> {
    if b.len() < HEADER_LEN as usize {
        return Err("short header");
    }
    if b[0..4] != MAGIC {
        return Err("bad magic");
    }
    if b[4] != VERSION {
        return Err("unknown record version");
    }
    let mut z = [0u8; 56];
    z.copy_from_slice(&b[0..56]);
    z[FLAGS_OFFSET as usize] = 0;
    if crc32fast::hash(&z) != u32_at(b, 56) {
        return Err("header crc mismatch");
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&b[8..40]);
    Ok(Header {
        flags: b[5],
        codec: b[6],
        hash,
        logical_len: u64_at(b, 40),
        stored_len: u64_at(b, 48),
        record_crc: u32_at(b, 60),
    })
}

/// Starts the record crc over a raw header (flags read as 0).
pub(crate) fn record_crc_start(raw_header: &[u8]) -> crc32fast::Hasher {
    let mut z = [0u8; 60];
    z.copy_from_slice(&raw_header[0..60]);
    z[FLAGS_OFFSET as usize] = 0;
    let mut c = crc32fast::Hasher::new();
    c.update(&z);
    c
}

/// One valid record found by a scan (or listed in a hint file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub offset: u64,
    pub hash: Hash,
    pub codec: u8,
    pub flags: u8,
    pub logical_len: u64,
    pub stored_len: u64,
}

/// A region that could not be read as records.
#[derive(Clone, Debug)]
pub(crate) struct BadRegion {
    pub offset: u64,
    pub len: u64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct ScanOutcome {
    pub entries: Vec<Entry>,
    /// Damaged regions followed by valid records.
    pub corrupt: Vec<BadRegion>,
    /// Invalid bytes at the end with no valid record after them (a torn tail, or a record being
    /// written right now when scanning read-only). `offset` is where the valid data ends.
    pub tail: Option<BadRegion>,
    /// End of the last valid record (== file length when there is no tail).
    pub valid_end: u64,
}

const CHUNK: usize = 64 * 1024;

/// Positional reader with a small read-ahead buffer, so a scan over small records costs one
/// syscall per 64 KiB rather than one per header, while large payloads are skipped with a seek.
struct ChunkReader<'a> {
    file: &'a File,
    len: u64,
    buf: Vec<u8>,
    buf_off: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a File, len: u64) -> Self {
        ChunkReader { file, len, buf: Vec::new(), buf_off: 0 }
    }

    /// `n` bytes at `off`, or None if they are past the end of the file.
    fn get(&mut self, off: u64, n: usize) -> io::Result<Option<&[u8]>> {
        let end = match off.checked_add(n as u64) {
            Some(e) if e <= self.len => e,
            _ => return Ok(None),
        };
        let have = off >= self.buf_off && end <= self.buf_off + self.buf.len() as u64;
        if !have {
            let want = (n.max(CHUNK) as u64).min(self.len - off) as usize;
            self.buf.resize(want, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf, off) {
                self.buf.clear();
                // The file shrank under us (read-only scan racing a truncation): treat as end.
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return Ok(None);
                }
                return Err(e);
            }
            self.buf_off = off;
        }
        let s = (off - self.buf_off) as usize;
        Ok(Some(&self.buf[s..s + n]))
    }
}

/// Streams the payload of a record through its crc. Returns Ok(false) on mismatch or short file.
pub(crate) fn payload_crc_ok(file: &File, offset: u64, raw_header: &[u8], hdr: &Header) -> io::Result<bool> {
    let mut crc = record_crc_start(raw_header);
    let mut buf = vec![0u8; (hdr.stored_len.min(1 << 20)) as usize];
    let mut pos = offset + HEADER_LEN;
    let mut left = hdr.stored_len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        match file.read_exact_at(&mut buf[..n], pos) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        crc.update(&buf[..n]);
        pos += n as u64;
        left -= n as u64;
    }
    Ok(crc.finalize() == hdr.record_crc)
}

enum Check {
    Valid(Entry, u64),
    /// Header is valid (lengths trustworthy) but the record is not: next record position given.
    BadPayload(u64, &'static str),
    Invalid(&'static str),
}

fn check_at(r: &mut ChunkReader<'_>, off: u64, verify: bool) -> io::Result<Check> {
    let raw = match r.get(off, HEADER_LEN as usize)? {
        Some(b) => {
            let mut a = [0u8; HEADER_LEN as usize];
            a.copy_from_slice(b);
            a
        }
        None => return Ok(Check::Invalid("short header")),
    };
    let hdr = match parse_header(&raw) {
        Ok(h) => h,
        Err(reason) => return Ok(Check::Invalid(reason)),
    };
    let size = match record_size(hdr.stored_len) {
        Some(s) => s,
        None => return Ok(Check::Invalid("impossible length")),
    };
    let end = match off.checked_add(size) {
        Some(e) => e,
        None => return Ok(Check::Invalid("impossible length")),
    };
    if end > r.len {
        return Ok(Check::Invalid("short payload"));
    }
    if verify && !payload_crc_ok(r.file, off, &raw, &hdr)? {
        return Ok(Check::BadPayload(end, "record crc mismatch"));
    }
    let e = Entry {
        offset: off,
        hash: hdr.hash,
        codec: hdr.codec,
        flags: hdr.flags,
        logical_len: hdr.logical_len,
        stored_len: hdr.stored_len,
    };
    Ok(Check::Valid(e, end))
}

/// Next offset >= `from` holding a fully valid record (magic, header crc, fits, record crc).
fn resync(r: &mut ChunkReader<'_>, from: u64) -> io::Result<Option<u64>> {
    let mut p = from.div_ceil(ALIGN) * ALIGN;
    while p.saturating_add(HEADER_LEN) <= r.len {
        let is_magic = match r.get(p, 4)? {
            Some(b) => b == MAGIC,
            None => return Ok(None),
        };
        if is_magic {
            if let Check::Valid(..) = check_at(r, p, true)? {
                return Ok(Some(p));
            }
        }
        p += ALIGN;
    }
    Ok(None)
}

/// Scans `file` (of length `len`) from `start`. Records starting at or after `verify_from` get
/// their record crc checked too (the unsynced tail of the active volume); earlier ones only
/// their header crc (payloads are checked on every read anyway).
///
/// An invalid record followed (anywhere later) by a fully valid one is corruption: it is reported
/// and skipped. An invalid record with nothing valid after it is the tail.
pub(crate) fn scan(file: &File, len: u64, start: u64, verify_from: u64) -> io::Result<ScanOutcome> {
    let mut r = ChunkReader::new(file, len);
    let mut out = ScanOutcome::default();
    let mut off = start;
    while off < len {
        let (reason, next_guess) = match check_at(&mut r, off, off >= verify_from)? {
            Check::Valid(e, end) => {
                out.entries.push(e);
                off = end;
                continue;
            }
            Check::BadPayload(next, reason) => (reason, Some(next)),
            Check::Invalid(reason) => (reason, None),
        };
        let mut next = None;
        if let Some(n) = next_guess {
            if n < len {
                if let Check::Valid(..) = check_at(&mut r, n, true)? {
                    next = Some(n);
                }
            }
        }
        if next.is_none() {
            next = resync(&mut r, off + ALIGN)?;
        }
        match next {
            Some(n) => {
                out.corrupt.push(BadRegion { offset: off, len: n - off, reason: reason.to_string() });
                off = n;
            }
            None => {
                out.tail = Some(BadRegion { offset: off, len: len - off, reason: reason.to_string() });
                break;
            }
        }
    }
    out.valid_end = out.tail.as_ref().map_or(len.max(start), |t| t.offset);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_flags_excluded() {
        let payload = b"hello world";
        let h = encode_header(3, &[7u8; 32], 99, &[], payload, None);
        // A caller's crc of head ++ payload gives the same header as the store's own pass.
        let (head, body) = payload.split_at(4);
        assert_eq!(encode_header(3, &[7u8; 32], 99, head, body, Some(crc32fast::hash(payload))), h);
        let p = parse_header(&h).unwrap();
        assert_eq!(p.codec, 3);
        assert_eq!(p.logical_len, 99);
        assert_eq!(p.stored_len, payload.len() as u64);
        let mut d = h;
        d[FLAGS_OFFSET as usize] = FLAG_DELETED;
        let p2 = parse_header(&d).unwrap();
        assert_eq!(p2.flags, FLAG_DELETED);
        let mut c = record_crc_start(&d);
        c.update(payload);
        assert_eq!(c.finalize(), p2.record_crc);
        let mut bad = h;
        bad[45] ^= 1;
        assert!(parse_header(&bad).is_err());
        assert_eq!(record_size(0), Some(64));
        assert_eq!(record_size(1), Some(72));
        assert_eq!(record_size(8), Some(72));
        assert_eq!(record_size(u64::MAX), None);
    }
}
