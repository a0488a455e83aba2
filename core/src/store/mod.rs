//! Durable, content-addressed blob store.
//!
//! [`BlobStore`] is the facade the bindings use. It holds named [`Tier`]s; for now only `hot`, a
//! [`VolumeTier`]: append-only volume files (`<root>/volumes/vol-NNNNNNNN.dat`, Haystack style)
//! with an in-memory index hash → [`Location`] rebuilt on open from per-volume hint files (sealed
//! volumes) and a scan of the active volume. See `record.rs` for the record format and `hint.rs`
//! for the hint files.
//!
//! Durability: `put` returns only once its record is on stable storage (group-committed
//! fdatasync); a new volume file is made durable with an fsync of its directory. A delete flips the
//! record's flags byte in place (excluded from the checksums) and syncs it; `compact` copies the
//! live records of mostly-garbage volumes into the active volume and then removes the old files.
//!
//! The store keeps stored (encoded) bytes and checks its own per-record crc32 on every read; the
//! logical hash is verified a layer up (`object::decode_verified`).

mod hint;
mod record;
mod volume;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::{self, Hash};

pub use volume::VolumeTier;

/// Default size at which the active volume is sealed and a new one started.
pub const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub root: PathBuf,
    /// Roll over to a new volume file once the active one would exceed this many bytes.
    pub volume_size: u64,
    /// fdatasync before `put`/`delete` return. Only benchmarks of the no-fsync case turn it off.
    pub sync: bool,
    /// Open without the writer lock, never writing or truncating (CLI `ls`/`export`/`verify`
    /// alongside a running writer). Call [`BlobStore::refresh`] to see newer records.
    pub read_only: bool,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig { root: root.into(), volume_size: DEFAULT_VOLUME_SIZE, sync: true, read_only: false }
    }
}

/// A blob as stored: encoded bytes plus what is needed to decode them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub codec: u8,
    pub logical_len: u64,
    pub bytes: Vec<u8>,
}

/// One blob to store.
#[derive(Clone, Copy, Debug)]
pub struct PutItem<'a> {
    /// BLAKE3 of the logical bytes (computed by the caller).
    pub hash: Hash,
    pub codec: u8,
    pub logical_len: u64,
    /// The stored (encoded) bytes.
    pub bytes: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// The hash was already stored; nothing was written.
    pub existed: bool,
}

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Index of the tier in the [`BlobStore`] (0 = `hot`).
    pub tier: u8,
    pub volume: u32,
    /// Offset of the record header in the volume file.
    pub offset: u64,
    pub stored_len: u64,
    pub logical_len: u64,
    pub codec: u8,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live blobs.
    pub objects: u64,
    /// Sum of the live blobs' stored (encoded) lengths.
    pub stored_bytes: u64,
    /// Sum of the live blobs' logical lengths.
    pub logical_bytes: u64,
    /// Bytes in volume files not taken by live records (deleted, duplicate, corrupt, torn);
    /// what `compact` can reclaim.
    pub garbage_bytes: u64,
    /// Total size of the volume files.
    pub disk_bytes: u64,
    pub volumes: u64,
    /// Damaged regions found by scans (see [`BlobStore::scan_report`]).
    pub corrupt_records: u64,
    /// fdatasync calls issued on volume files since open (group commit makes this < puts).
    pub syncs: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.objects += o.objects;
        self.stored_bytes += o.stored_bytes;
        self.logical_bytes += o.logical_bytes;
        self.garbage_bytes += o.garbage_bytes;
        self.disk_bytes += o.disk_bytes;
        self.volumes += o.volumes;
        self.corrupt_records += o.corrupt_records;
        self.syncs += o.syncs;
    }
}

/// A region of a volume file that is not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRegion {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub reason: String,
}

/// What the scans at open (or the last refresh) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Damaged records followed by valid ones: kept out of the index, left on disk, reclaimed by
    /// compaction of their volume.
    pub corrupt: Vec<DamagedRegion>,
    /// Torn tails (interrupted appends) cut off the active volume at open.
    pub truncated: Vec<DamagedRegion>,
}

#[derive(Debug, Default)]
pub struct CompactReport {
    pub volumes_compacted: u64,
    pub records_moved: u64,
    /// Net bytes of volume files freed (removed file sizes minus bytes copied).
    pub bytes_reclaimed: u64,
    /// Volumes that could not be compacted (e.g. `StorageFull` while copying, or a corrupt live
    /// record); they are left as they were and the other candidates are still processed.
    pub errors: Vec<Error>,
}

/// A storage tier: somewhere blobs can be put and got by hash.
pub trait Tier: Send + Sync {
    fn name(&self) -> &str;
    fn put(&self, item: &PutItem<'_>) -> Result<PutOutcome>;
    /// Writes all items, then makes them durable with one sync.
    fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<PutOutcome>>;
    fn get(&self, hash: &Hash) -> Result<StoredBlob>;
    fn contains(&self, hash: &Hash) -> bool;
    fn locate(&self, hash: &Hash) -> Option<Location>;
    /// Whether it existed.
    fn delete(&self, hash: &Hash) -> Result<bool>;
    fn stats(&self) -> Stats;
    /// All live hashes, in on-disk order (reading them in sequence is sequential I/O).
    fn hashes(&self) -> Vec<Hash>;
    /// Reclaims space from volumes whose garbage fraction is >= `threshold` (0.0..=1.0).
    fn compact(&self, threshold: f64) -> Result<CompactReport>;
    /// Read-only tiers: pick up what a writer did since open. Writable tiers: no-op.
    fn refresh(&self) -> Result<()> {
        Ok(())
    }
    fn scan_report(&self) -> ScanReport {
        ScanReport::default()
    }
}

/// The public store: named tiers (for now only `hot`).
pub struct BlobStore {
    root: PathBuf,
    tiers: Vec<Box<dyn Tier>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tiers.iter().map(|t| t.name()).collect();
        f.debug_struct("BlobStore").field("root", &self.root).field("tiers", &names).finish()
    }
}

impl BlobStore {
    pub fn open(config: StoreConfig) -> Result<Self> {
        let hot = VolumeTier::open(&config, "hot", 0)?;
        Ok(BlobStore { root: config.root, tiers: vec![Box::new(hot)] })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tier_names(&self) -> Vec<&str> {
        self.tiers.iter().map(|t| t.name()).collect()
    }

    pub fn tier(&self, name: &str) -> Option<&dyn Tier> {
        self.tiers.iter().find(|t| t.name() == name).map(|t| t.as_ref())
    }

    fn hot(&self) -> &dyn Tier {
        self.tiers[0].as_ref()
    }

    /// Stores a blob durably (returns after fdatasync). `existed` if the hash was already stored.
    pub fn put(&self, hash: &Hash, codec: u8, logical_len: u64, bytes: &[u8]) -> Result<PutOutcome> {
        self.hot().put(&PutItem { hash: *hash, codec, logical_len, bytes })
    }

    pub fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<PutOutcome>> {
        self.hot().put_many(items)
    }

    pub fn get(&self, hash: &Hash) -> Result<StoredBlob> {
        for t in &self.tiers {
            match t.get(hash) {
                Err(Error::NotFound { .. }) => continue,
                other => return other,
            }
        }
        Err(Error::NotFound { hash: hash::to_hex(hash) })
    }

    pub fn get_many(&self, hashes: &[Hash]) -> Vec<Result<StoredBlob>> {
        hashes.iter().map(|h| self.get(h)).collect()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.tiers.iter().any(|t| t.contains(hash))
    }

    pub fn locate(&self, hash: &Hash) -> Option<Location> {
        self.tiers.iter().find_map(|t| t.locate(hash))
    }

    /// Deletes from every tier; whether it existed anywhere.
    pub fn delete(&self, hash: &Hash) -> Result<bool> {
        let mut any = false;
        for t in &self.tiers {
            any |= t.delete(hash)?;
        }
        Ok(any)
    }

    pub fn compact(&self, threshold: f64) -> Result<CompactReport> {
        let mut total = CompactReport::default();
        for t in &self.tiers {
            let r = t.compact(threshold)?;
            total.volumes_compacted += r.volumes_compacted;
            total.records_moved += r.records_moved;
            total.bytes_reclaimed += r.bytes_reclaimed;
            total.errors.extend(r.errors);
        }
        Ok(total)
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for t in &self.tiers {
            s.add(&t.stats());
        }
        s
    }

    /// All live hashes, tier by tier, each tier in on-disk order.
    pub fn hashes(&self) -> Vec<Hash> {
        let mut out = Vec::new();
        for t in &self.tiers {
            out.extend(t.hashes());
        }
        out
    }

    /// Every live blob (for verify and replication), read in on-disk order. A blob deleted after
    /// the snapshot of hashes was taken yields `NotFound`.
    pub fn iter(&self) -> impl Iterator<Item = (Hash, Result<StoredBlob>)> + '_ {
        self.hashes().into_iter().map(move |h| {
            let r = self.get(&h);
            (h, r)
        })
    }

    pub fn refresh(&self) -> Result<()> {
        for t in &self.tiers {
            t.refresh()?;
        }
        Ok(())
    }

    pub fn scan_report(&self) -> ScanReport {
        let mut r = ScanReport::default();
        for t in &self.tiers {
            let s = t.scan_report();
            r.corrupt.extend(s.corrupt);
            r.truncated.extend(s.truncated);
        }
        r
    }
}

#[cfg(test)]
mod tests;

/// Refuses a write of `incoming` bytes that would leave less than `min_free` bytes on the
/// filesystem holding `root`. Why: the index beside the store must always be able to commit
/// what the store accepted (RocksDB turns read-only after a failed WAL write), and an operator
/// must be able to run deletes to get out of a full disk.
pub fn check_free_space(root: &Path, incoming: u64, min_free: u64) -> Result<()> {
    if min_free == 0 {
        return Ok(());
    }
    let c_path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::io(root, std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: statvfs fills the zeroed struct; c_path is a valid NUL-terminated string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(root, std::io::Error::last_os_error()));
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if free.saturating_sub(incoming) < min_free {
        return Err(Error::StorageFull {
            path: root.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{free} bytes free, {incoming} incoming, reserve {min_free}"),
            ),
        });
    }
    Ok(())
}
