//! A local tier written through several volume lanes at once.
//!
//! Why: a buffered write takes the file's inode lock (ext4, xfs and tmpfs alike), so writers
//! appending to one volume file copy into the page cache one at a time however many cores they
//! have. Measured on this machine kind: two threads `pwrite`-ing 512 KiB blocks into one tmpfs
//! file reached 2.8 GB/s, the same two threads writing two files 5.3 GB/s.
//!
//! Each lane is a complete [`VolumeTier`] in its own directory (lane 0 is the tier's directory
//! itself, so a store from before lanes opens unchanged; lane k is `lane-k/` inside it) with its
//! own active volume and group commit. Everything the volume tier guarantees (a put returns
//! once durable, only a lane's last volume can have a torn tail, compaction within a volume set)
//! therefore holds per lane unchanged. Lane k numbers its volumes from `k << 24`, so a
//! [`Location`] names its volume uniquely within the tier.
//!
//! A writer takes the least busy lane for a whole `put_many`. A hash lives in one lane only:
//! under `routes`, an item whose hash a lane holds, or another writer is putting right now,
//! goes to that lane, whose own dedup then waits until that copy is durable.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use super::{
    CompactReport, Location, PutItem, PutOutcome, ScanReport, Stats, StoreConfig, StoredBlob, Tier,
    VolumeTier,
};
use crate::error::{Error, Result};
use crate::hash::{self, Hash};

/// Lanes a tier can have (lane k's volume ids start at `k << 24`).
pub const MAX_LANES: usize = 255;

const LANE_PREFIX: &str = "lane-";

fn lane_dir(dir: &Path, k: usize) -> PathBuf {
    if k == 0 {
        dir.to_path_buf()
    } else {
        dir.join(format!("{LANE_PREFIX}{k}"))
    }
}

/// The highest lane number with a directory under `full` (0 when there is none).
fn highest_lane(full: &Path) -> Result<usize> {
    let entries = match fs::read_dir(full) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        other => other.map_err(|e| Error::io(full, e))?,
    };
    let mut top = 0;
    for ent in entries {
        let ent = ent.map_err(|e| Error::io(full, e))?;
        let name = ent.file_name();
        let Some(k) = name.to_str().and_then(|n| n.strip_prefix(LANE_PREFIX)).and_then(|d| d.parse().ok())
        else {
            continue;
        };
        if (1..MAX_LANES).contains(&k) && ent.path().is_dir() {
            top = top.max(k);
        }
    }
    Ok(top)
}

/// The number of lanes new stores get: as many as the concurrent writers of `dicomvault ingest`
/// (twice the cores), up to 4 (more lanes than writers only leave more partly filled volumes).
/// Why not one per core: two writers appending to one lane's volume wait for each other on its
/// inode lock, and the kernel spins a while before it sleeps (perf on 2 cores, 4 ingest threads,
/// 2 lanes: 2 % of the ingest's CPU in rwsem spinning).
pub fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_mul(2).clamp(1, 4)
}

pub struct LanedTier {
    name: String,
    tier: u8,
    /// As configured (relative to the store root unless absolute), for opening lanes later.
    dir: PathBuf,
    full: PathBuf,
    config: StoreConfig,
    /// Every lane with a directory; writes go to the first `write_lanes` (others, left by a
    /// configuration with more lanes, are read, deleted from and compacted).
    lanes: RwLock<Vec<VolumeTier>>,
    write_lanes: usize,
    busy: Vec<AtomicUsize>,
    /// Hashes being put right now: their lane and how many puts of them are in progress.
    routes: Mutex<HashMap<Hash, (usize, usize)>>,
}

impl std::fmt::Debug for LanedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanedTier").field("name", &self.name).field("dir", &self.full).finish()
    }
}

/// Takes a writer off its lane's busy count and its hashes off `routes`, however the put ends.
struct PutGuard<'a> {
    tier: &'a LanedTier,
    lane: usize,
    hashes: Vec<Hash>,
}

impl Drop for PutGuard<'_> {
    fn drop(&mut self) {
        self.tier.busy[self.lane].fetch_sub(1, Ordering::Relaxed);
        let mut routes = self.tier.routes.lock().unwrap_or_else(|e| e.into_inner());
        for h in &self.hashes {
            if let Some((_, n)) = routes.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    routes.remove(h);
                }
            }
        }
    }
}

impl LanedTier {
    /// Opens every lane directory the tier has, and creates the missing ones of the first
    /// `config.lanes` (writable opens).
    pub fn open(config: &StoreConfig, name: &str, tier: u8, dir: &Path) -> Result<Self> {
        let full = config.root.join(dir);
        let top = highest_lane(&full)?;
        // Read-only: a put goes to lane 0, which refuses it.
        let write_lanes = if config.read_only { 1 } else { config.lanes.clamp(1, MAX_LANES) };
        let count = if config.read_only { top + 1 } else { write_lanes.max(top + 1) };
        let mut lanes = Vec::with_capacity(count);
        for k in 0..count {
            lanes.push(VolumeTier::open(config, name, tier, &lane_dir(dir, k), (k as u32) << 24)?);
        }
        Ok(LanedTier {
            name: name.to_string(),
            tier,
            dir: dir.to_path_buf(),
            full,
            config: config.clone(),
            busy: (0..write_lanes).map(|_| AtomicUsize::new(0)).collect(),
            lanes: RwLock::new(lanes),
            write_lanes,
            routes: Mutex::new(HashMap::new()),
        })
    }

    fn lanes(&self) -> RwLockReadGuard<'_, Vec<VolumeTier>> {
        self.lanes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The writable lane with the fewest writers (the lowest on a tie, so a lone writer always
    /// fills lane 0).
    fn pick(&self) -> usize {
        (0..self.write_lanes).min_by_key(|&k| self.busy[k].load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Lane of each item: where its hash already is or is being put, else `mine`; each is
    /// registered in `routes` until the guard drops.
    fn route(&self, lanes: &[VolumeTier], items: &[PutItem<'_>], mine: usize) -> (Vec<usize>, PutGuard<'_>) {
        self.busy[mine].fetch_add(1, Ordering::Relaxed);
        let mut guard = PutGuard { tier: self, lane: mine, hashes: Vec::with_capacity(items.len()) };
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let routed = items
            .iter()
            .map(|it| {
                guard.hashes.push(it.hash);
                let (lane, n) = routes
                    .entry(it.hash)
                    .or_insert_with(|| (lanes.iter().position(|l| l.holds(&it.hash)).unwrap_or(mine), 0));
                *n += 1;
                *lane
            })
            .collect();
        (routed, guard)
    }

    fn each<T>(&self, f: impl Fn(&VolumeTier) -> Result<T>) -> Result<Vec<T>> {
        self.lanes().iter().map(f).collect()
    }
}

impl Tier for LanedTier {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, item: &PutItem<'_>) -> Result<PutOutcome> {
        Ok(self.put_many(std::slice::from_ref(item))?.remove(0))
    }

    fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<PutOutcome>> {
        let lanes = self.lanes();
        if lanes.len() == 1 {
            return lanes[0].put_many(items);
        }
        let mine = self.pick();
        let (routed, _guard) = self.route(&lanes, items, mine);
        if routed.iter().all(|&l| l == mine) {
            return lanes[mine].put_many(items);
        }
        let mut out = vec![PutOutcome { existed: false }; items.len()];
        let mut order: Vec<usize> = routed.clone();
        order.sort_unstable_by_key(|&l| (l != mine, l));
        order.dedup();
        for lane in order {
            let idx: Vec<usize> = (0..items.len()).filter(|&i| routed[i] == lane).collect();
            let sub: Vec<PutItem<'_>> = idx.iter().map(|&i| items[i]).collect();
            for (i, r) in idx.into_iter().zip(lanes[lane].put_many(&sub)?) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn get(&self, hash: &Hash) -> Result<StoredBlob> {
        for lane in self.lanes().iter() {
            match lane.get(hash) {
                Err(Error::NotFound { .. }) => continue,
                other => return other,
            }
        }
        Err(Error::NotFound { hash: hash::to_hex(hash) })
    }

    fn contains(&self, hash: &Hash) -> bool {
        self.lanes().iter().any(|l| l.contains(hash))
    }

    fn locate(&self, hash: &Hash) -> Option<Location> {
        self.lanes().iter().find_map(|l| l.locate(hash))
    }

    fn prefetch(&self, hashes: &[Hash]) {
        for lane in self.lanes().iter() {
            lane.prefetch(hashes);
        }
    }

    fn delete(&self, hash: &Hash) -> Result<bool> {
        Ok(self.each(|l| l.delete(hash))?.into_iter().any(|d| d))
    }

    fn delete_many(&self, hashes: &[Hash]) -> Result<u64> {
        Ok(self.each(|l| l.delete_many(hashes))?.into_iter().sum())
    }

    fn path(&self) -> &Path {
        &self.full
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for l in self.lanes().iter() {
            s.add(&l.stats());
        }
        s
    }

    fn hashes(&self) -> Vec<Hash> {
        self.lanes().iter().flat_map(|l| l.hashes()).collect()
    }

    fn compact(&self, threshold: f64) -> Result<CompactReport> {
        let mut total = CompactReport::default();
        for r in self.each(|l| l.compact(threshold))? {
            total.merge(r);
        }
        Ok(total)
    }

    /// Read-only: also opens the lanes a writer created since (a store opened before its writer
    /// ever ran with more lanes).
    fn refresh(&self) -> Result<()> {
        if !self.config.read_only {
            return Ok(());
        }
        let top = highest_lane(&self.full)?;
        let have = self.lanes().len();
        if top >= have {
            let mut fresh = Vec::new();
            for k in have..=top {
                fresh.push(VolumeTier::open(
                    &self.config,
                    &self.name,
                    self.tier,
                    &lane_dir(&self.dir, k),
                    (k as u32) << 24,
                )?);
            }
            let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
            if lanes.len() == have {
                lanes.extend(fresh);
            }
        }
        self.each(|l| l.refresh()).map(|_| ())
    }

    fn scan_report(&self) -> ScanReport {
        let mut r = ScanReport::default();
        for l in self.lanes().iter() {
            let s = l.scan_report();
            r.corrupt.extend(s.corrupt);
            r.truncated.extend(s.truncated);
        }
        r
    }
}
