//! Durable, content-addressed blob store.
//!
//! [`BlobStore`] is the facade the bindings use. It holds the local tiers, fastest first, each a
//! [`LanedTier`] of one or more [`VolumeTier`] lanes (writers copy in parallel, one lane each):
//! append-only volume files (`<dir>/vol-NNNNNNNN.dat`, Haystack style) with an
//! in-memory index hash → [`Location`] rebuilt on open from per-volume hint files (sealed
//! volumes) and a scan of the active volume. See `record.rs` for the record format and `hint.rs`
//! for the hint files. New objects go to the first tier (the landing tier); moving a blob to
//! another tier is [`crate::tiermove`]'s (copy, read back and verify, then the caller switches
//! its index and frees the old copy with [`BlobStore::delete_in`]). Tiers off this machine
//! (object stores) are not here: the Python layer keeps those.
//!
//! Durability: `put` returns only once its record is on stable storage (group-committed
//! fdatasync); a new volume file is made durable with an fsync of its directory. A delete flips the
//! record's flags byte in place (excluded from the checksums) and syncs it; `compact` copies the
//! live records of mostly-garbage volumes into the active volume and then removes the old files.
//!
//! The store keeps stored (encoded) bytes and checks its own per-record crc32 on every read; the
//! logical hash is verified a layer up (`object::decode_verified`).

mod hint;
mod lanes;
mod record;
mod volume;

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::{self, Hash};

pub use lanes::{default_lanes, LanedTier, MAX_LANES};
pub use volume::VolumeTier;

/// Default size at which the active volume is sealed and a new one started.
pub const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;

/// One local tier: its name and directory (relative to the store root unless absolute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTierConfig {
    pub name: String,
    pub dir: PathBuf,
}

impl LocalTierConfig {
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        LocalTierConfig { name: name.into(), dir: dir.into() }
    }
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub root: PathBuf,
    /// The local tiers, fastest first; new objects go to the first. Never empty.
    pub tiers: Vec<LocalTierConfig>,
    /// Roll over to a new volume file once the active one would exceed this many bytes.
    pub volume_size: u64,
    /// fdatasync before `put`/`delete` return. Only benchmarks of the no-fsync case turn it off.
    pub sync: bool,
    /// Open without the writer lock, never writing or truncating (CLI `ls`/`export`/`verify`
    /// alongside a running writer). Call [`BlobStore::refresh`] to see newer records.
    pub read_only: bool,
    /// Volume lanes each local tier writes through at once ([`LanedTier`]); 1..=[`MAX_LANES`].
    pub lanes: usize,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            root: root.into(),
            tiers: vec![LocalTierConfig::new("hot", "volumes")],
            volume_size: DEFAULT_VOLUME_SIZE,
            sync: true,
            read_only: false,
            lanes: default_lanes(),
        }
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
    /// The stored (encoded) bytes are `head ++ bytes` (a raw object: its transfer syntax
    /// header, then the caller's dataset bytes, never joined in memory).
    pub head: &'a [u8],
    pub bytes: &'a [u8],
    /// CRC-32 of `head ++ bytes` when the caller computed it along with the hash (saves the
    /// record a second pass over the bytes); None: the store computes it.
    pub crc: Option<u32>,
}

impl PutItem<'_> {
    pub fn stored_len(&self) -> u64 {
        (self.head.len() + self.bytes.len()) as u64
    }
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
    pub(super) fn add(&mut self, o: &Stats) {
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

impl CompactReport {
    pub(super) fn merge(&mut self, r: CompactReport) {
        self.volumes_compacted += r.volumes_compacted;
        self.records_moved += r.records_moved;
        self.bytes_reclaimed += r.bytes_reclaimed;
        self.errors.extend(r.errors);
    }
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
    /// Deletes every listed blob it holds with one sync per volume touched; how many it held.
    fn delete_many(&self, hashes: &[Hash]) -> Result<u64>;
    /// Where its files live (for free-space checks).
    fn path(&self) -> &Path;
    fn stats(&self) -> Stats;
    /// All live hashes, in on-disk order (reading them in sequence is sequential I/O).
    fn hashes(&self) -> Vec<Hash>;
    /// Reclaims space from volumes whose garbage fraction is >= `threshold` (0.0..=1.0).
    fn compact(&self, threshold: f64) -> Result<CompactReport>;
    /// Asks the kernel to start reading the records of those of `hashes` it holds, without
    /// waiting for them (see [`BlobStore::prefetch`]). Default: nothing.
    fn prefetch(&self, _hashes: &[Hash]) {}
    /// Read-only tiers: pick up what a writer did since open. Writable tiers: no-op.
    fn refresh(&self) -> Result<()> {
        Ok(())
    }
    fn scan_report(&self) -> ScanReport {
        ScanReport::default()
    }
}

/// The public store: the local tiers, fastest first.
pub struct BlobStore {
    root: PathBuf,
    tiers: Vec<Box<dyn Tier>>,
    /// The `flock` on `<root>/LOCK`, held while a writable store is open.
    _lock: Option<File>,
    read_only: bool,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tiers.iter().map(|t| t.name()).collect();
        f.debug_struct("BlobStore").field("root", &self.root).field("tiers", &names).finish()
    }
}

impl BlobStore {
    pub fn open(config: StoreConfig) -> Result<Self> {
        if config.tiers.is_empty() || config.tiers.len() > u8::MAX as usize {
            return Err(Error::Unsupported { reason: format!("{} local tiers (1-255)", config.tiers.len()) });
        }
        let lock = if config.read_only {
            if !config.tiers.iter().any(|t| config.root.join(&t.dir).is_dir()) {
                return Err(Error::io(
                    &config.root,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no tier directory (not a blob store?)",
                    ),
                ));
            }
            None
        } else {
            std::fs::create_dir_all(&config.root).map_err(|e| Error::io(&config.root, e))?;
            Some(volume::take_lock(&config.root)?)
        };
        let mut tiers: Vec<Box<dyn Tier>> = Vec::with_capacity(config.tiers.len());
        for (i, t) in config.tiers.iter().enumerate() {
            if config.tiers[..i].iter().any(|o| o.name == t.name || o.dir == t.dir) {
                return Err(Error::Unsupported { reason: format!("tier {} named or placed twice", t.name) });
            }
            tiers.push(Box::new(LanedTier::open(&config, &t.name, i as u8, &t.dir)?));
        }
        Ok(BlobStore { root: config.root, tiers, _lock: lock, read_only: config.read_only })
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

    /// The tier at `index` (0 = the landing tier).
    pub fn tier_at(&self, index: usize) -> Result<&dyn Tier> {
        self.tiers
            .get(index)
            .map(|t| t.as_ref())
            .ok_or_else(|| Error::Unsupported { reason: format!("no tier {index}") })
    }

    pub fn tier_index(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.name() == name)
    }

    fn landing(&self) -> &dyn Tier {
        self.tiers[0].as_ref()
    }

    /// Stores a blob durably (returns after fdatasync). `existed` if the hash was already stored.
    pub fn put(&self, hash: &Hash, codec: u8, logical_len: u64, bytes: &[u8]) -> Result<PutOutcome> {
        let item = PutItem { hash: *hash, codec, logical_len, head: &[], bytes, crc: None };
        Ok(self.put_many(std::slice::from_ref(&item))?.remove(0))
    }

    /// Stores new blobs in the landing tier with one group-committed sync. A hash any tier
    /// already holds is not written again (`existed`), wherever it lives.
    pub fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<PutOutcome>> {
        let elsewhere: Vec<bool> =
            items.iter().map(|i| self.tiers[1..].iter().any(|t| t.contains(&i.hash))).collect();
        if !elsewhere.contains(&true) {
            return self.landing().put_many(items);
        }
        let fresh: Vec<PutItem<'_>> =
            items.iter().zip(&elsewhere).filter(|(_, e)| !**e).map(|(i, _)| *i).collect();
        let mut written = self.landing().put_many(&fresh)?.into_iter();
        Ok(elsewhere
            .iter()
            .map(|e| {
                let landed = if *e { None } else { written.next() };
                landed.unwrap_or(PutOutcome { existed: true })
            })
            .collect())
    }

    /// Stores blobs in one given tier (a tier move's copy, a heal), one sync.
    pub fn put_many_in(&self, tier: usize, items: &[PutItem<'_>]) -> Result<Vec<PutOutcome>> {
        self.tier_at(tier)?.put_many(items)
    }

    /// Frees the copies one tier holds of `hashes` (the old copies after a move); how many.
    pub fn delete_in(&self, tier: usize, hashes: &[Hash]) -> Result<u64> {
        self.tier_at(tier)?.delete_many(hashes)
    }

    /// Per tier, in order: name and statistics.
    pub fn tier_stats(&self) -> Vec<(String, Stats)> {
        self.tiers.iter().map(|t| (t.name().to_string(), t.stats())).collect()
    }

    /// Indices of the tiers holding a copy of `hash` (more than one only mid-move).
    pub fn holders(&self, hash: &Hash) -> Vec<usize> {
        (0..self.tiers.len()).filter(|&i| self.tiers[i].contains(hash)).collect()
    }

    pub fn get(&self, hash: &Hash) -> Result<StoredBlob> {
        match self.get_once(hash) {
            // A read-only view loaded before the writer moved the blob to another tier (the
            // old copy is flagged deleted, the new one is past what this view loaded): look
            // again at what the writer has now.
            Err(Error::NotFound { .. }) if self.read_only => {
                self.refresh()?;
                self.get_once(hash)
            }
            other => other,
        }
    }

    fn get_once(&self, hash: &Hash) -> Result<StoredBlob> {
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

    /// Starts the reads of these blobs' records in the background (POSIX_FADV_WILLNEED) and
    /// returns at once. Why: a retrieve reads a study's objects in the study's order, which after
    /// compaction is not the volumes' order, so with a cold page cache every object was a
    /// random read waited for on its own (two: header, then payload), ~1-1.5 ms each on this
    /// machine's disk, while the device serves many at once. Blobs found nowhere are skipped.
    pub fn prefetch(&self, hashes: &[Hash]) {
        for t in &self.tiers {
            t.prefetch(hashes);
        }
    }

    /// Deletes from every tier; whether it existed anywhere.
    pub fn delete(&self, hash: &Hash) -> Result<bool> {
        let mut any = false;
        for t in &self.tiers {
            any |= t.delete(hash)?;
        }
        Ok(any)
    }

    /// Deletes from every tier with one sync per volume touched; how many copies were freed.
    pub fn delete_many(&self, hashes: &[Hash]) -> Result<u64> {
        let mut n = 0;
        for t in &self.tiers {
            n += t.delete_many(hashes)?;
        }
        Ok(n)
    }

    pub fn compact(&self, threshold: f64) -> Result<CompactReport> {
        let mut total = CompactReport::default();
        for t in &self.tiers {
            total.merge(t.compact(threshold)?);
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

/// How much free space a filesystem holding a tier must keep after a write: `fraction` of its
/// size, at least `floor` and at most `ceiling` bytes (the floor wins if they cross). Why a
/// reserve: the index beside the store must always be able to commit what the store accepted
/// (RocksDB turns read-only after a failed WAL write or flush), and an operator must be able to
/// run deletes to get out of a full disk. Why it scales: what it must hold (memtable flushes,
/// compactions) grows with the archive, while a fixed reserve sized for a large disk leaves a
/// small one nothing to store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reserve {
    pub floor: u64,
    pub fraction: f64,
    pub ceiling: u64,
}

impl Reserve {
    /// No reserve: writes run until the device itself refuses (benchmarks, restore targets).
    pub const NONE: Reserve = Reserve { floor: 0, fraction: 0.0, ceiling: 0 };

    pub fn fixed(bytes: u64) -> Self {
        Reserve { floor: bytes, fraction: 0.0, ceiling: bytes }
    }

    /// The reserve on a filesystem of `size` bytes.
    pub fn bytes(&self, size: u64) -> u64 {
        let fraction = if self.fraction.is_finite() { self.fraction.clamp(0.0, 1.0) } else { 0.0 };
        ((size as f64 * fraction) as u64).min(self.ceiling).max(self.floor)
    }
}

/// Refuses (`StorageFull`) a write of `incoming` bytes that would leave less than the reserve
/// free on the filesystem holding `root`.
pub fn check_free_space(root: &Path, incoming: u64, reserve: &Reserve) -> Result<()> {
    if *reserve == Reserve::NONE {
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
    let size = (st.f_blocks as u64).saturating_mul(st.f_frsize as u64);
    let keep = reserve.bytes(size);
    if free.saturating_sub(incoming) < keep {
        return Err(Error::StorageFull {
            path: root.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free of {size}, {incoming} incoming, {keep} kept in reserve for the index \
                     and for deletes"
                ),
            ),
        });
    }
    Ok(())
}
