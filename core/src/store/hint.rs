//! Hint (index) files of sealed volumes: `vol-NNNNNNNN.idx` next to `vol-NNNNNNNN.dat`.
//!
//! Written once when a volume is sealed (rolled over) so that open reads a compact list instead of
//! seeking through every record header. A hint is only a cache: when it is missing, does not match
//! the volume's length, or fails its checksum, open scans the volume instead (and rewrites it).
//!
//! ```text
//! header (64 bytes): magic "DVHINT01" | version u32 | volume id u32 | volume length u64 |
//!                    entry count u64 | reserved (32 zero bytes)
//! entries (64 bytes each, sorted by offset):
//!                    offset u64 | stored_len u64 | logical_len u64 | hash [32] | codec u8 |
//!                    flags u8 | reserved [6]
//! trailer: crc32 (u32 LE) of header + entries with every entry's flags byte read as 0
//! ```
//!
//! Like the flags byte of a record, an entry's flags byte is excluded from the checksum so that a
//! delete can flip it in place. Entry flags: DELETED (as in the record), CORRUPT (the entry
//! describes a damaged region `[offset, offset + stored_len)` found by the scan, kept for reports).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{u32_at, u64_at, BadRegion, Entry, FLAG_DELETED};

const MAGIC: [u8; 8] = *b"DVHINT01";
const VERSION: u32 = 1;
const HDR: u64 = 64;
const ENTRY: u64 = 64;
const ENTRY_FLAGS: u64 = 57;
pub(crate) const FLAG_CORRUPT: u8 = 0x80;

fn crc_of(body: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&body[..HDR as usize]);
    let mut e = [0u8; ENTRY as usize];
    for chunk in body[HDR as usize..].chunks_exact(ENTRY as usize) {
        e.copy_from_slice(chunk);
        e[ENTRY_FLAGS as usize] = 0;
        c.update(&e);
    }
    c.finalize()
}

/// Writes the hint atomically (tmp file, fsync, rename, fsync dir).
pub(crate) fn write(
    dir: &Path,
    hint: &Path,
    vol_id: u32,
    volume_len: u64,
    entries: &[Entry],
    bad: &[BadRegion],
) -> io::Result<()> {
    let mut all: Vec<(u64, [u8; ENTRY as usize])> = Vec::with_capacity(entries.len() + bad.len());
    for e in entries {
        let mut b = [0u8; ENTRY as usize];
        b[0..8].copy_from_slice(&e.offset.to_le_bytes());
        b[8..16].copy_from_slice(&e.stored_len.to_le_bytes());
        b[16..24].copy_from_slice(&e.logical_len.to_le_bytes());
        b[24..56].copy_from_slice(&e.hash);
        b[56] = e.codec;
        b[57] = e.flags & FLAG_DELETED;
        all.push((e.offset, b));
    }
    for r in bad {
        let mut b = [0u8; ENTRY as usize];
        b[0..8].copy_from_slice(&r.offset.to_le_bytes());
        b[8..16].copy_from_slice(&r.len.to_le_bytes());
        b[57] = FLAG_CORRUPT;
        all.push((r.offset, b));
    }
    all.sort_by_key(|(o, _)| *o);
    let mut body = Vec::with_capacity((HDR + ENTRY * all.len() as u64 + 4) as usize);
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(&VERSION.to_le_bytes());
    body.extend_from_slice(&vol_id.to_le_bytes());
    body.extend_from_slice(&volume_len.to_le_bytes());
    body.extend_from_slice(&(all.len() as u64).to_le_bytes());
    body.resize(HDR as usize, 0);
    for (_, b) in &all {
        body.extend_from_slice(b);
    }
    let crc = crc_of(&body);
    body.extend_from_slice(&crc.to_le_bytes());

    let tmp = hint.with_extension("idx.tmp");
    let res = (|| {
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all_at(&body, 0)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, hint)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Reads a hint. None when missing or not trustworthy for a volume of `volume_len` bytes.
pub(crate) fn read(hint: &Path, vol_id: u32, volume_len: u64) -> Option<(Vec<Entry>, Vec<BadRegion>)> {
    let body = fs::read(hint).ok()?;
    let entries_len = body.len().checked_sub((HDR + 4) as usize)?;
    if entries_len / ENTRY as usize * ENTRY as usize != entries_len {
        return None;
    }
    let (main, trailer) = body.split_at(body.len() - 4);
    if main[0..8] != MAGIC
        || u32_at(main, 8) != VERSION
        || u32_at(main, 12) != vol_id
        || u64_at(main, 16) != volume_len
        || u64_at(main, 24) != ((main.len() as u64 - HDR) / ENTRY)
        || crc_of(main) != u32_at(trailer, 0)
    {
        return None;
    }
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    let mut prev_end = 0u64;
    for b in main[HDR as usize..].chunks_exact(ENTRY as usize) {
        let offset = u64_at(b, 0);
        let stored_len = u64_at(b, 8);
        let flags = b[57];
        if flags & FLAG_CORRUPT != 0 {
            let end = offset.checked_add(stored_len)?;
            if offset < prev_end || end > volume_len {
                return None;
            }
            prev_end = end;
            bad.push(BadRegion {
                offset,
                len: stored_len,
                reason: "damaged region (recorded in hint)".into(),
            });
            continue;
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[24..56]);
        let e = Entry {
            offset,
            hash,
            codec: b[56],
            flags: flags & FLAG_DELETED,
            logical_len: u64_at(b, 16),
            stored_len,
        };
        let end = offset.checked_add(super::record::record_size(stored_len)?)?;
        if offset < prev_end || end > volume_len {
            return None;
        }
        prev_end = end;
        entries.push(e);
    }
    Some((entries, bad))
}

/// Sets DELETED on the entry for the record at `offset` (binary search by offset) and syncs it.
/// Ok(false) if the hint file does not exist.
pub(crate) fn mark_deleted(hint: &Path, offset: u64) -> io::Result<bool> {
    let f = match OpenOptions::new().read(true).write(true).open(hint) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut h = [0u8; HDR as usize];
    f.read_exact_at(&mut h, 0)?;
    if h[0..8] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad hint magic"));
    }
    let count = u64_at(&h, 24);
    let (mut lo, mut hi) = (0u64, count);
    let mut e = [0u8; ENTRY as usize];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        f.read_exact_at(&mut e, HDR + mid * ENTRY)?;
        let o = u64_at(&e, 0);
        if o == offset && e[57] & FLAG_CORRUPT == 0 {
            f.write_all_at(&[e[57] | FLAG_DELETED], HDR + mid * ENTRY + ENTRY_FLAGS)?;
            f.sync_data()?;
            return Ok(true);
        }
        if o < offset {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "record not listed in hint"))
}
