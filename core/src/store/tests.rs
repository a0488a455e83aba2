use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::hash::hash;

/// One lane: these tests are about the volume files themselves (the lane tests set their own).
fn cfg(root: &Path) -> StoreConfig {
    StoreConfig { lanes: 1, ..StoreConfig::new(root) }
}

fn small(root: &Path, volume_size: u64) -> StoreConfig {
    StoreConfig { volume_size, sync: false, lanes: 1, ..StoreConfig::new(root) }
}

fn laned(root: &Path, lanes: usize) -> StoreConfig {
    StoreConfig { lanes, volume_size: 64 << 10, ..StoreConfig::new(root) }
}

/// Volume files (any extension `ext`) of every lane of the `volumes` tier.
fn lane_files(root: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("volumes")];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `threads` writers putting `per` blobs each (ids t * 1000 + k), all at once.
fn put_concurrently(s: &Arc<BlobStore>, threads: u32, per: u32, shared: bool) {
    let go = Arc::new(std::sync::Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (s, go) = (s.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                for k in 0..per {
                    let id = if shared { k } else { t * 1000 + k };
                    let (h, b) = blob(id, 3000 + id as usize % 5000);
                    let out = s.put(&h, 1, b.len() as u64 * 2, &b).unwrap();
                    assert!(shared || !out.existed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn lanes_write_in_parallel_and_reopen_with_any_count() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(BlobStore::open(laned(d.path(), 3)).unwrap());
    put_concurrently(&s, 6, 40, false);
    assert_eq!(s.stats().objects, 240);
    let used: Vec<PathBuf> =
        lane_files(d.path(), "dat").into_iter().filter(|p| fs::metadata(p).unwrap().len() > 0).collect();
    assert!(
        used.iter().any(|p| p.to_string_lossy().contains("lane-")),
        "one lane took every write: {used:?}"
    );
    drop(s);
    // Fewer lanes than the store has: the others are still read, deleted from and compacted.
    for lanes in [1, 3, 5] {
        let s = BlobStore::open(laned(d.path(), lanes)).unwrap();
        assert_eq!(s.stats().objects, 240, "{lanes} lanes");
        for t in 0..6 {
            for k in 0..40 {
                check(&s, t * 1000 + k, 3000 + (t * 1000 + k) as usize % 5000);
            }
        }
    }
    let s = BlobStore::open(laned(d.path(), 1)).unwrap();
    let gone: Vec<Hash> = (0..6)
        .flat_map(|t| (0..40).map(move |k| blob(t * 1000 + k, 3000 + (t * 1000 + k) as usize % 5000).0))
        .collect();
    assert_eq!(s.delete_many(&gone).unwrap(), 240);
    s.compact(0.5).unwrap();
    assert_eq!(s.stats().objects, 0);
}

#[test]
fn a_hash_put_from_many_lanes_at_once_is_stored_once() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(BlobStore::open(laned(d.path(), 4)).unwrap());
    put_concurrently(&s, 8, 30, true);
    let st = s.stats();
    assert_eq!(st.objects, 30);
    assert_eq!(st.garbage_bytes, 0, "a second copy was written");
    drop(s);
    let s = BlobStore::open(laned(d.path(), 4)).unwrap();
    assert_eq!(s.stats().objects, 30);
    assert!(s.scan_report().corrupt.is_empty());
}

#[test]
fn a_read_only_view_finds_lanes_created_after_it_opened() {
    let d = tempfile::tempdir().unwrap();
    let s = BlobStore::open(laned(d.path(), 1)).unwrap();
    put(&s, 1, 100);
    drop(s);
    let view = BlobStore::open(StoreConfig { read_only: true, ..laned(d.path(), 1) }).unwrap();
    let s = Arc::new(BlobStore::open(laned(d.path(), 4)).unwrap());
    put_concurrently(&s, 4, 20, false);
    assert!(lane_files(d.path(), "dat").iter().any(|p| p.to_string_lossy().contains("lane-3")));
    for t in 0..4 {
        for k in 0..20 {
            // `get` refreshes a read-only view on a miss.
            let (h, b) = blob(t * 1000 + k, 3000 + (t * 1000 + k) as usize % 5000);
            assert_eq!(view.get(&h).unwrap().bytes, b);
        }
    }
    assert_eq!(view.stats().objects, 81);
}

#[test]
fn a_torn_tail_in_a_lane_is_cut_at_open() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(BlobStore::open(laned(d.path(), 2)).unwrap());
    put_concurrently(&s, 4, 10, false);
    drop(s);
    let last =
        lane_files(d.path(), "dat").into_iter().rfind(|p| p.to_string_lossy().contains("lane-1")).unwrap();
    let f = fs::OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all_at(&[0xAB; 700], fs::metadata(&last).unwrap().len()).unwrap();
    drop(f);
    let s = BlobStore::open(laned(d.path(), 2)).unwrap();
    assert_eq!(s.stats().objects, 40);
    let torn = s.scan_report().truncated;
    assert_eq!(torn.len(), 1);
    assert_eq!(torn[0].path, last);
}

fn blob(i: u32, len: usize) -> (Hash, Vec<u8>) {
    let mut bytes: Vec<u8> = (0..len).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8).collect();
    if len >= 4 {
        bytes[..4].copy_from_slice(&i.to_le_bytes());
    }
    (hash(&bytes), bytes)
}

fn put(s: &BlobStore, i: u32, len: usize) -> Hash {
    let (h, b) = blob(i, len);
    let out = s.put(&h, 1, b.len() as u64 * 2, &b).unwrap();
    assert!(!out.existed);
    h
}

fn check(s: &BlobStore, i: u32, len: usize) {
    let (h, b) = blob(i, len);
    let got = s.get(&h).unwrap_or_else(|e| panic!("blob {i}: {e}"));
    assert_eq!(got.bytes, b, "blob {i}");
    assert_eq!(got.codec, 1);
    assert_eq!(got.logical_len, b.len() as u64 * 2);
}

fn vol_files(root: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn disk_usage(root: &Path) -> u64 {
    vol_files(root, "dat").iter().map(|p| fs::metadata(p).unwrap().len()).sum()
}

#[test]
fn round_trip_and_dedupe() {
    let d = tempfile::tempdir().unwrap();
    let s = BlobStore::open(cfg(d.path())).unwrap();
    let h = put(&s, 1, 1000);
    check(&s, 1, 1000);
    assert!(s.contains(&h));
    assert_eq!(s.locate(&h).unwrap().tier, 0);
    let before = s.stats();
    assert_eq!(before.objects, 1);
    assert_eq!(before.stored_bytes, 1000);
    assert_eq!(before.logical_bytes, 2000);
    assert_eq!(before.garbage_bytes, 0);
    // dedupe: nothing written
    let (_, b) = blob(1, 1000);
    assert!(s.put(&h, 1, 2000, &b).unwrap().existed);
    assert_eq!(s.stats().disk_bytes, before.disk_bytes);
    // empty blob
    let e = hash(b"");
    assert!(!s.put(&e, 0, 0, b"").unwrap().existed);
    assert_eq!(s.get(&e).unwrap().bytes, b"");
    // batch, with a duplicate inside it
    let (h2, b2) = blob(2, 333);
    let (h3, b3) = blob(3, 70_000);
    let items = [
        PutItem { hash: h2, codec: 1, logical_len: 666, head: &[], bytes: &b2, crc: None },
        PutItem { hash: h3, codec: 1, logical_len: 140_000, head: &[], bytes: &b3, crc: None },
        PutItem { hash: h2, codec: 1, logical_len: 666, head: &[], bytes: &b2, crc: None },
        PutItem { hash: h, codec: 1, logical_len: 2000, head: &[], bytes: &b, crc: None },
    ];
    let outs: Vec<bool> = s.put_many(&items).unwrap().iter().map(|o| o.existed).collect();
    assert_eq!(outs, vec![false, false, true, true]);
    check(&s, 2, 333);
    check(&s, 3, 70_000);
    assert!(matches!(s.get(&[9u8; 32]), Err(Error::NotFound { .. })));
    assert_eq!(s.get_many(&[h, [9u8; 32]]).iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(s.hashes().len(), 4);
    assert_eq!(s.iter().filter(|(_, r)| r.is_ok()).count(), 4);
    drop(s);
    let s = BlobStore::open(cfg(d.path())).unwrap();
    assert_eq!(s.stats().objects, 4);
    check(&s, 1, 1000);
    check(&s, 3, 70_000);
}

#[test]
fn concurrent_puts_group_commit() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(BlobStore::open(cfg(d.path())).unwrap());
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for k in 0..25 {
                    put(&s, t * 1000 + k, 4096 + k as usize);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = s.stats();
    assert_eq!(st.objects, 200);
    assert!(st.syncs > 0 && st.syncs < 200, "fdatasync calls: {}", st.syncs);
    eprintln!("200 concurrent puts, {} fdatasyncs", st.syncs);
    drop(s);
    let s = BlobStore::open(cfg(d.path())).unwrap();
    for t in 0..8 {
        for k in 0..25 {
            check(&s, t * 1000 + k, 4096 + k as usize);
        }
    }
}

#[test]
fn rollover_hints_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let c = small(d.path(), 4096);
    let s = BlobStore::open(c.clone()).unwrap();
    for i in 0..60 {
        put(&s, i, 500 + i as usize);
    }
    let st = s.stats();
    assert!(st.volumes >= 8, "volumes: {}", st.volumes);
    assert_eq!(vol_files(d.path(), "idx").len() as u64, st.volumes - 1);
    let (h5, _) = blob(5, 505);
    assert!(s.delete(&h5).unwrap()); // in a sealed volume: updates its hint
    drop(s);

    let s = BlobStore::open(c.clone()).unwrap();
    assert_eq!(s.stats().objects, 59);
    assert!(!s.contains(&h5));
    for i in (0..60).filter(|&i| i != 5) {
        check(&s, i, 500 + i as usize);
    }
    drop(s);

    // A damaged hint is ignored (scan instead) and rewritten.
    let idx = vol_files(d.path(), "idx")[0].clone();
    let mut bytes = fs::read(&idx).unwrap();
    bytes[70] ^= 0xff;
    fs::write(&idx, &bytes).unwrap();
    let s = BlobStore::open(c.clone()).unwrap();
    assert_eq!(s.stats().objects, 59);
    assert!(!s.contains(&h5));
    assert_ne!(fs::read(&idx).unwrap(), bytes);
    drop(s);
    // Missing hints too.
    for p in vol_files(d.path(), "idx") {
        fs::remove_file(p).unwrap();
    }
    let s = BlobStore::open(c).unwrap();
    assert_eq!(s.stats().objects, 59);
    for i in (0..60).filter(|&i| i != 5) {
        check(&s, i, 500 + i as usize);
    }
}

#[test]
fn torn_tail_at_every_offset() {
    let d = tempfile::tempdir().unwrap();
    let c = small(d.path(), 1 << 30);
    let s = BlobStore::open(c.clone()).unwrap();
    for i in 0..5 {
        put(&s, i, 300);
    }
    let start = s.stats().disk_bytes;
    let (h_last, _) = blob(99, 101); // 64 + 101 = 165, padded to 168: covers the padding too
    put(&s, 99, 101);
    drop(s);
    let vol = vol_files(d.path(), "dat")[0].clone();
    let full = fs::read(&vol).unwrap();
    assert_eq!(full.len() as u64, start + 168);
    for cut in start..full.len() as u64 {
        fs::write(&vol, &full[..cut as usize]).unwrap();
        let s = BlobStore::open(c.clone()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(s.stats().objects, 5, "cut at {cut}");
        assert!(!s.contains(&h_last));
        assert_eq!(fs::metadata(&vol).unwrap().len(), start, "torn tail cut off");
        if cut > start {
            assert_eq!(s.scan_report().truncated.len(), 1);
        }
        assert_eq!(s.stats().corrupt_records, 0);
        for i in 0..5 {
            check(&s, i, 300);
        }
        put(&s, 1000 + cut as u32, 50);
        check(&s, 1000 + cut as u32, 50);
    }
    // A bad crc in the last record (header intact, payload damaged) is a torn tail too.
    let mut bad = full.clone();
    bad[start as usize + 100] ^= 1;
    fs::write(&vol, &bad).unwrap();
    let s = BlobStore::open(c).unwrap();
    assert_eq!(s.stats().objects, 5);
    assert_eq!(fs::metadata(&vol).unwrap().len(), start);
}

#[test]
fn mid_volume_corruption_is_reported_not_truncated() {
    let d = tempfile::tempdir().unwrap();
    let c = small(d.path(), 1 << 30);
    let s = BlobStore::open(c.clone()).unwrap();
    let mut offs = Vec::new();
    for i in 0..8 {
        let h = put(&s, i, 1000);
        offs.push(s.locate(&h).unwrap().offset);
    }
    drop(s);
    let vol = vol_files(d.path(), "dat")[0].clone();
    let f = fs::OpenOptions::new().read(true).write(true).open(&vol).unwrap();
    let len = f.metadata().unwrap().len();
    // record 2: payload byte flipped; record 5: header (length field) flipped.
    f.write_all_at(&[0xAA], offs[2] + 64 + 10).unwrap();
    f.write_all_at(&[0xFF], offs[5] + 50).unwrap();
    drop(f);
    let s = BlobStore::open(c).unwrap();
    assert_eq!(fs::metadata(&vol).unwrap().len(), len, "nothing truncated");
    let st = s.stats();
    assert_eq!(st.corrupt_records, 2);
    assert_eq!(st.objects, 6);
    let rep = s.scan_report();
    assert_eq!(rep.corrupt.len(), 2);
    assert_eq!(rep.corrupt[0].offset, offs[2]);
    assert_eq!(rep.corrupt[1].offset, offs[5]);
    assert!(rep.truncated.is_empty());
    for i in [0, 1, 3, 4, 6, 7] {
        check(&s, i, 1000);
    }
    let (h2, _) = blob(2, 1000);
    assert!(matches!(s.get(&h2), Err(Error::NotFound { .. })));
    // The corrupt bytes are garbage that compaction reclaims; a new put works.
    assert!(st.garbage_bytes >= 2 * 1064);
    put(&s, 2, 1000);
    check(&s, 2, 1000);
}

#[test]
fn get_detects_corruption_in_sealed_volume() {
    let d = tempfile::tempdir().unwrap();
    let c = small(d.path(), 2048);
    let s = BlobStore::open(c.clone()).unwrap();
    let hs: Vec<Hash> = (0..6).map(|i| put(&s, i, 1500)).collect();
    let loc = s.locate(&hs[0]).unwrap();
    drop(s);
    let path = d.path().join("volumes").join(format!("vol-{:08}.dat", loc.volume));
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x55], loc.offset + 64 + 700).unwrap();
    drop(f);
    let s = BlobStore::open(c).unwrap(); // sealed volume read from its hint: no payload check at open
    match s.get(&hs[0]) {
        Err(Error::Corrupt { path: p, offset, .. }) => {
            assert_eq!(p, path);
            assert_eq!(offset, loc.offset);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    check(&s, 1, 1500);
}

#[test]
fn delete_and_compact_reclaim_space() {
    let d = tempfile::tempdir().unwrap();
    let c = small(d.path(), 64 * 1024);
    let s = BlobStore::open(c.clone()).unwrap();
    let hs: Vec<Hash> = (0..100).map(|i| put(&s, i, 4000)).collect();
    let before = disk_usage(d.path());
    let deleted: Vec<u32> = (0..100).filter(|i| i % 10 < 7).collect();
    for &i in &deleted {
        assert!(s.delete(&hs[i as usize]).unwrap());
    }
    assert!(!s.delete(&hs[0]).unwrap());
    assert_eq!(disk_usage(d.path()), before, "delete only flags");
    let st = s.stats();
    assert_eq!(st.objects, 30);
    assert!(st.garbage_bytes >= 70 * 4064);
    let r = s.compact(0.5).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.volumes_compacted > 0);
    let after = disk_usage(d.path());
    assert!(after < before / 2, "disk {before} -> {after}");
    let st = s.stats();
    assert_eq!(st.disk_bytes, after);
    assert!(st.garbage_bytes < 64 * 1024, "garbage left: {}", st.garbage_bytes);
    assert_eq!(st.objects, 30);
    let live = |i: &u32| i % 10 >= 7;
    for i in (0..100).filter(live) {
        check(&s, i, 4000);
    }
    drop(s);
    let s = BlobStore::open(c).unwrap();
    assert_eq!(s.stats().objects, 30);
    for i in 0..100u32 {
        if live(&i) {
            check(&s, i, 4000);
        } else {
            assert!(!s.contains(&hs[i as usize]));
        }
    }
}

#[test]
fn reads_race_with_compaction() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(BlobStore::open(small(d.path(), 32 * 1024)).unwrap());
    let hs: Vec<Hash> = (0..200).map(|i| put(&s, i, 3000)).collect();
    for i in (0..200).filter(|i| i % 2 == 0) {
        s.delete(&hs[i]).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) || n == 0 {
                    for i in (0..200u32).filter(|i| i % 2 == 1).skip(t) {
                        check(&s, i, 3000);
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let r = s.compact(0.3).unwrap();
    assert!(r.errors.is_empty() && r.records_moved > 0);
    stop.store(true, Ordering::Relaxed);
    for t in readers {
        assert!(t.join().unwrap() > 0);
    }
    assert_eq!(s.stats().objects, 100);
}

#[test]
fn duplicate_copies_do_not_resurrect() {
    // Simulates a crash in the middle of compaction: the same record in two volumes.
    let d = tempfile::tempdir().unwrap();
    let c = small(d.path(), 4096);
    let s = BlobStore::open(c.clone()).unwrap();
    let h = put(&s, 7, 3000);
    let loc = s.locate(&h).unwrap();
    put(&s, 8, 3000); // rolls over: record 7 is now in a sealed volume
    drop(s);
    let vols = vol_files(d.path(), "dat");
    let rec = {
        let f = fs::File::open(&vols[0]).unwrap();
        let mut b = vec![0u8; 3064];
        f.read_exact_at(&mut b, loc.offset).unwrap();
        b
    };
    let active = vols.last().unwrap();
    let mut bytes = fs::read(active).unwrap();
    bytes.extend_from_slice(&rec);
    fs::write(active, &bytes).unwrap();
    let s = BlobStore::open(c.clone()).unwrap();
    assert_eq!(s.stats().objects, 2);
    assert!(s.stats().garbage_bytes >= 3064);
    check(&s, 7, 3000);
    assert!(s.delete(&h).unwrap());
    drop(s);
    let s = BlobStore::open(c).unwrap();
    assert!(!s.contains(&h), "deleted blob resurrected from its duplicate");
    check(&s, 8, 3000);
}

#[test]
fn read_only_open_alongside_writer() {
    let d = tempfile::tempdir().unwrap();
    let w = BlobStore::open(small(d.path(), 16 * 1024)).unwrap();
    for i in 0..10 {
        put(&w, i, 2000);
    }
    // A record being written right now: a valid-looking header whose payload is not there yet.
    let active = vol_files(d.path(), "dat").last().unwrap().clone();
    let f = fs::OpenOptions::new().append(true).open(&active).unwrap();
    let len = f.metadata().unwrap().len();
    let (hx, bx) = blob(500, 900);
    let hdr = record::encode_header(1, &hx, 900, &[], &bx, None);
    std::io::Write::write_all(&mut &f, &hdr).unwrap();
    std::io::Write::write_all(&mut &f, &bx[..100]).unwrap();
    drop(f);

    let r = BlobStore::open(StoreConfig { read_only: true, ..StoreConfig::new(d.path()) }).unwrap();
    assert_eq!(fs::metadata(&active).unwrap().len(), len + 164, "read-only open never truncates");
    assert_eq!(r.stats().objects, 10);
    assert_eq!(r.stats().corrupt_records, 0);
    for i in 0..10 {
        check(&r, i, 2000);
    }
    assert!(matches!(r.put(&hx, 1, 900, &bx), Err(Error::Locked { .. })));
    assert!(matches!(r.delete(&hx), Err(Error::Locked { .. })));
    assert!(r.compact(0.0).is_err());

    for i in 10..30 {
        put(&w, i, 2000); // overwrites the partial record, rolls over a few times
    }
    let (h3, _) = blob(3, 2000);
    w.delete(&h3).unwrap();
    assert_eq!(r.stats().objects, 10);
    r.refresh().unwrap();
    assert_eq!(r.stats().objects, 29);
    assert!(!r.contains(&h3));
    for i in (0..30).filter(|&i| i != 3) {
        check(&r, i, 2000);
    }
    // Compaction by the writer while the reader has the old files open.
    w.compact(0.0).unwrap();
    for i in (0..30).filter(|&i| i != 3) {
        check(&r, i, 2000);
    }
    r.refresh().unwrap();
    assert_eq!(r.stats().objects, 29);
    check(&r, 29, 2000);
}

#[test]
fn second_writer_is_locked_out() {
    let d = tempfile::tempdir().unwrap();
    let w = BlobStore::open(cfg(d.path())).unwrap();
    match BlobStore::open(cfg(d.path())) {
        Err(Error::Locked { path, reason }) => {
            assert_eq!(path, d.path().join("LOCK"));
            assert!(reason.contains(&format!("pid {}", std::process::id())), "{reason}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(w);
    BlobStore::open(cfg(d.path())).unwrap();
    assert!(BlobStore::open(StoreConfig { read_only: true, ..cfg(&d.path().join("nope")) }).is_err());
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn storage_full_leaves_nothing_partial() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping ENOSPC test: not root");
        return;
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping ENOSPC test: cannot mount tmpfs");
        return;
    }
    let _guard = Unmount(mnt.clone());
    let c = StoreConfig { volume_size: 128 * 1024, ..StoreConfig::new(&mnt) };
    let s = BlobStore::open(c.clone()).unwrap();
    let mut n = 0u32;
    let err = loop {
        let (h, b) = blob(n, 20_000);
        match s.put(&h, 1, 40_000, &b) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 200, "tmpfs never filled up");
    };
    assert!(matches!(err, Error::StorageFull { .. }), "{err:?}");
    assert!(n > 50);
    let (hfail, _) = blob(n, 20_000);
    assert!(!s.contains(&hfail));
    for i in 0..n {
        check(&s, i, 20_000);
    }
    // Still full, still consistent.
    assert!(matches!(s.put(&hfail, 1, 40_000, &blob(n, 20_000).1), Err(Error::StorageFull { .. })));
    // Free space: delete the older 3/4 and compact.
    for i in 0..n * 3 / 4 {
        assert!(s.delete(&blob(i, 20_000).0).unwrap());
    }
    let r = s.compact(0.5).unwrap();
    assert!(r.volumes_compacted > 0);
    for i in n..n + 10 {
        put(&s, i, 20_000);
    }
    for i in n * 3 / 4..n + 10 {
        check(&s, i, 20_000);
    }
    drop(s);
    let s = BlobStore::open(c).unwrap();
    assert!(s.scan_report().truncated.is_empty());
    assert_eq!(s.stats().corrupt_records, 0);
    for i in n * 3 / 4..n + 10 {
        check(&s, i, 20_000);
    }
}

fn two_tiers(root: &Path) -> StoreConfig {
    StoreConfig {
        tiers: vec![LocalTierConfig::new("landing", "landing"), LocalTierConfig::new("warm", "volumes")],
        sync: false,
        ..StoreConfig::new(root)
    }
}

#[test]
fn new_blobs_land_in_the_first_tier_and_dedupe_across_tiers() {
    let d = tempfile::tempdir().unwrap();
    let s = BlobStore::open(two_tiers(d.path())).unwrap();
    assert_eq!(s.tier_names(), vec!["landing", "warm"]);
    let h = put(&s, 1, 1000);
    assert_eq!(s.holders(&h), vec![0]);
    // Once in warm only, a second put of the same hash writes nothing anywhere.
    let (_, b) = blob(1, 1000);
    s.put_many_in(1, &[PutItem { hash: h, codec: 1, logical_len: 2000, head: &[], bytes: &b, crc: None }])
        .unwrap();
    assert_eq!(s.delete_in(0, &[h]).unwrap(), 1);
    assert_eq!(s.holders(&h), vec![1]);
    let (h2, b2) = blob(2, 500);
    let items = [
        PutItem { hash: h, codec: 1, logical_len: 2000, head: &[], bytes: &b, crc: None },
        PutItem { hash: h2, codec: 1, logical_len: 1000, head: &[], bytes: &b2, crc: None },
    ];
    let out = s.put_many(&items).unwrap();
    assert_eq!(out, vec![PutOutcome { existed: true }, PutOutcome { existed: false }]);
    assert_eq!(s.holders(&h), vec![1]);
    assert_eq!(s.holders(&h2), vec![0]);
    check(&s, 1, 1000);
    let per: Vec<u64> = s.tier_stats().iter().map(|(_, st)| st.objects).collect();
    assert_eq!(per, vec![1, 1]);
    drop(s);
    // Placement survives a reopen (each tier rebuilds its own map), read-only too.
    let r = BlobStore::open(StoreConfig { read_only: true, ..two_tiers(d.path()) }).unwrap();
    assert_eq!(r.holders(&h), vec![1]);
    assert_eq!(r.holders(&h2), vec![0]);
}

#[test]
fn delete_many_syncs_once_per_volume_and_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let s = BlobStore::open(StoreConfig { sync: true, ..two_tiers(d.path()) }).unwrap();
    let hs: Vec<Hash> = (0..20).map(|i| put(&s, i, 300)).collect();
    let before = s.tier_at(0).unwrap().stats().syncs;
    assert_eq!(s.delete_in(0, &hs[..10]).unwrap(), 10);
    assert_eq!(s.tier_at(0).unwrap().stats().syncs - before, 1);
    assert_eq!(s.delete_in(0, &hs[..10]).unwrap(), 0, "already gone");
    drop(s);
    let s = BlobStore::open(two_tiers(d.path())).unwrap();
    assert!(hs[..10].iter().all(|h| !s.contains(h)));
    assert!(hs[10..].iter().all(|h| s.contains(h)));
}

#[test]
fn tiers_must_be_distinct_and_a_read_only_open_tolerates_a_new_tier() {
    let d = tempfile::tempdir().unwrap();
    let mut c = two_tiers(d.path());
    c.tiers[1].dir = "landing".into();
    assert!(BlobStore::open(c).is_err());
    drop(BlobStore::open(cfg(d.path())).unwrap());
    // An old store (one tier in volumes/) read with a landing tier configured in front.
    let r = BlobStore::open(StoreConfig { read_only: true, ..two_tiers(d.path()) }).unwrap();
    assert_eq!(r.stats().objects, 0);
    assert!(BlobStore::open(StoreConfig { read_only: true, ..two_tiers(&d.path().join("none")) }).is_err());
}

#[test]
fn concurrent_writers_with_duplicates_and_rollovers_lose_nothing() {
    // Writers copy into the volume outside the append lock: each must find its record durable,
    // readable and unique, across many rollovers, with the same hashes put by several threads.
    let d = tempfile::tempdir().unwrap();
    let c = StoreConfig { volume_size: 64 * 1024, ..StoreConfig::new(d.path()) };
    let s = Arc::new(BlobStore::open(c.clone()).unwrap());
    let threads: Vec<_> = (0..6u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut fresh = 0;
                for k in 0..120u32 {
                    // Half the ids are shared by every thread (duplicates in flight together).
                    let i = if k % 2 == 0 { k } else { 10_000 + t * 1000 + k };
                    let (h, b) = blob(i, 2000 + (i as usize % 7) * 1500);
                    if !s.put(&h, 1, b.len() as u64 * 2, &b).unwrap().existed {
                        fresh += 1;
                    }
                    let got = s.get(&h).unwrap();
                    assert_eq!(got.bytes, b, "read back {i}");
                }
                fresh
            })
        })
        .collect();
    let fresh: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let shared = 60;
    let own = 6 * 60;
    assert_eq!(fresh, shared + own, "each hash written once");
    assert_eq!(s.stats().objects, u64::from(shared + own));
    assert!(s.stats().volumes > 10, "rollovers happened: {}", s.stats().volumes);
    drop(s);
    let s = BlobStore::open(c).unwrap();
    assert_eq!(s.stats().objects, u64::from(shared + own));
    assert_eq!(s.stats().garbage_bytes, 0, "no duplicate record written");
    assert!(s.scan_report().corrupt.is_empty() && s.scan_report().truncated.is_empty());
}

#[test]
fn a_read_only_view_follows_a_blob_moved_to_another_tier() {
    let d = tempfile::tempdir().unwrap();
    let w = BlobStore::open(two_tiers(d.path())).unwrap();
    let h = put(&w, 5, 3000);
    let r = BlobStore::open(StoreConfig { read_only: true, ..two_tiers(d.path()) }).unwrap();
    assert_eq!(r.holders(&h), vec![0]);
    // The writer moves it (copy to warm, free the landing copy) after the view was loaded.
    let (_, b) = blob(5, 3000);
    w.put_many_in(1, &[PutItem { hash: h, codec: 1, logical_len: 6000, head: &[], bytes: &b, crc: None }])
        .unwrap();
    w.delete_in(0, &[h]).unwrap();
    assert_eq!(r.get(&h).unwrap().bytes, b);
    assert_eq!(r.holders(&h), vec![1]);
}

#[test]
fn reserve_scales_with_the_filesystem_between_floor_and_ceiling() {
    let r = Reserve { floor: 16 << 20, fraction: 0.02, ceiling: 4 << 30 };
    assert_eq!(r.bytes(48 << 20), 16 << 20); // a small volume keeps the floor, not 2 % of it
    assert_eq!(r.bytes(100 << 30), 2 << 30); // 2 % of 100 GiB
    assert_eq!(r.bytes(10 << 40), 4 << 30); // capped on a large one
    assert_eq!(Reserve::fixed(64 << 20).bytes(1 << 40), 64 << 20);
    // Crossed bounds: the floor wins; a nonsense fraction counts as none.
    assert_eq!(Reserve { floor: 10, fraction: 0.5, ceiling: 5 }.bytes(1000), 10);
    assert_eq!(Reserve { floor: 1, fraction: f64::NAN, ceiling: 99 }.bytes(1000), 1);
    let d = tempfile::tempdir().unwrap();
    assert!(check_free_space(d.path(), 0, &Reserve::NONE).is_ok());
    let all = Reserve { floor: 0, fraction: 1.0, ceiling: u64::MAX };
    let err = check_free_space(d.path(), 1, &all).unwrap_err();
    assert!(matches!(err.again(), Error::StorageFull { .. }));
    assert_eq!(err.again().to_string(), err.to_string());
    assert!(err.to_string().contains("kept in reserve"), "{err}");
}

#[test]
fn prefetch_takes_held_missing_and_deleted_blobs_alike() {
    let d = tempfile::tempdir().unwrap();
    let s = BlobStore::open(laned(d.path(), 2)).unwrap();
    let held: Vec<Hash> = (0..20).map(|i| put(&s, i, 5000 + i as usize)).collect();
    let gone = put(&s, 99, 700);
    assert!(s.delete(&gone).unwrap());
    let mut asked = held.clone();
    asked.extend([gone, blob(1234, 10).0]);
    s.prefetch(&asked);
    s.prefetch(&[]);
    for i in 0..20 {
        check(&s, i, 5000 + i as usize);
    }
    assert!(s.get(&gone).is_err());
}
