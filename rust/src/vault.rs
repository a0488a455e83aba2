//! `Vault`: the blob store plus the object pipeline (parse → hash → encode → durable put), as one
//! Python class. Every method that touches bytes runs with the GIL released.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dicomvault_core::attrtext::decode_index_attrs;
use dicomvault_core::codec::{Codec, StoredCrc};
use dicomvault_core::hash::Hash;
use dicomvault_core::object::{self, Landed, Prepared, ReadCheck};
use dicomvault_core::parse::INDEX_TAGS;
use dicomvault_core::store::{check_free_space, BlobStore, LocalTierConfig, PutItem, Reserve, StoreConfig};
use dicomvault_core::tiermove;
use dicomvault_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::convert::{hash_arg, landed_to_py, stats_to_py, IndexText};
use crate::decoded::{self, DecodedObject};
use crate::errors::{to_py, IntoPy};
use crate::gil;
use crate::net::ReceivedDataSet;

#[pyclass(frozen, module = "dicomvault._native")]
pub struct Vault {
    store: Mutex<Option<Arc<BlobStore>>>,
    level: i32,
    reserve: Reserve,
    /// Codec of what ingest stores in the landing tier (raw: compacted later; hot: inline).
    ingest_codec: Codec,
    /// How reads check what they decode (`[storage] verify_reads`).
    read_check: ReadCheck,
}

impl Vault {
    pub(crate) fn read_check(&self) -> ReadCheck {
        self.read_check
    }

    pub(crate) fn store(&self) -> PyResult<Arc<BlobStore>> {
        self.store
            .lock()
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("vault lock poisoned"))?
            .clone()
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("vault is closed"))
    }

    /// Stores the prepared objects with one group-committed sync; one result per input, with
    /// its index attributes decoded here, where the GIL is not held.
    fn put_prepared(
        &self,
        store: &BlobStore,
        prepared: Vec<Result<Prepared<'_>, Error>>,
    ) -> Vec<Result<(Landed, bool, IndexText), Error>> {
        let items: Vec<PutItem<'_>> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(|p| {
                let (head, bytes) = p.parts();
                PutItem {
                    hash: p.hash,
                    codec: p.codec as u8,
                    logical_len: p.logical_len,
                    head,
                    bytes,
                    crc: p.stored_crc,
                }
            })
            .collect();
        let mut outcomes = put_batch(store, &items, &self.reserve, None).into_iter();
        drop(items);
        prepared
            .into_iter()
            .map(|p| {
                let p = p?;
                let existed = outcomes.next().expect("one outcome per prepared object")?;
                let text = decode_index_attrs(&p.parsed.attrs);
                Ok((p.landed(), existed, text))
            })
            .collect()
    }
}

/// Puts a batch with one group-committed sync, after the free-space check; one result per item
/// (`Ok(existed)`). A failure of the batch is reported on every item of it. `tier` None: new
/// objects, into the landing tier unless some tier holds them already.
fn put_batch(
    store: &BlobStore,
    items: &[PutItem<'_>],
    reserve: &Reserve,
    tier: Option<usize>,
) -> Vec<Result<bool, Error>> {
    let incoming = items.iter().map(|i| i.stored_len()).sum();
    let put = || match tier {
        Some(t) => store.put_many_in(t, items),
        None => store.put_many(items),
    };
    let dir = store.tier_at(tier.unwrap_or(0)).map_or(store.root(), |t| t.path());
    match check_free_space(dir, incoming, reserve).and_then(|_| put()) {
        Ok(v) => v.into_iter().map(|o| Ok(o.existed)).collect(),
        Err(e) => items.iter().map(|_| Err(e.again())).collect(),
    }
}

fn results_to_py(
    py: Python<'_>,
    results: Vec<Result<(Landed, bool, IndexText), Error>>,
) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for r in results {
        match r {
            Ok((p, existed, text)) => list.append(landed_to_py(py, &p, existed, &text)?)?,
            Err(e) => list.append(to_py(e).into_value(py))?,
        }
    }
    Ok(list)
}

#[pymethods]
impl Vault {
    /// `tiers`: the local tiers as (name, directory relative to `root`), fastest first; new
    /// objects go to the first, encoded with `ingest_codec` (0 raw, 1 hot).
    #[new]
    #[pyo3(signature = (
        root, *, read_only=false, sync=true, level=1, volume_size=1<<30, min_free_bytes=0,
        tiers=None, ingest_codec=1, reserve_fraction=0.0, reserve_max_bytes=None,
        verify_reads="checksum",
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        root: PathBuf,
        read_only: bool,
        sync: bool,
        level: i32,
        volume_size: u64,
        min_free_bytes: u64,
        tiers: Option<Vec<(String, PathBuf)>>,
        ingest_codec: u8,
        reserve_fraction: f64,
        reserve_max_bytes: Option<u64>,
        verify_reads: &str,
    ) -> PyResult<Self> {
        let ingest_codec = Codec::from_u8(ingest_codec).py_err()?;
        let read_check = ReadCheck::parse(verify_reads).py_err()?;
        let mut config = StoreConfig { volume_size, sync, read_only, ..StoreConfig::new(root) };
        if let Some(t) = tiers {
            config.tiers = t.into_iter().map(|(name, dir)| LocalTierConfig::new(name, dir)).collect();
        }
        let store = gil::blocking(py, || {
            decoded::prewarm();
            BlobStore::open(config)
        })
        .py_err()?;
        // The free space every write leaves: `reserve_fraction` of the filesystem, at least
        // `min_free_bytes`, at most `reserve_max_bytes` (core::store::Reserve).
        let reserve = Reserve {
            floor: min_free_bytes,
            fraction: reserve_fraction,
            ceiling: reserve_max_bytes.unwrap_or(min_free_bytes),
        };
        Ok(Vault { store: Mutex::new(Some(Arc::new(store))), level, reserve, ingest_codec, read_check })
    }

    /// Reads, parses, hashes, encodes and durably stores files. One result per path: a dict, or
    /// the exception that rejected it (nothing stored for that file).
    fn ingest_files<'py>(&self, py: Python<'py>, paths: Vec<PathBuf>) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let (level, target) = (self.level, self.ingest_codec);
        let results = gil::blocking(py, || {
            // Read first: a raw landing stores the files' own bytes, without a copy.
            let mut files: Vec<Result<Vec<u8>, Error>> =
                paths.iter().map(|p| std::fs::read(p).map_err(|e| Error::io(p, e))).collect();
            let prepared = files
                .iter_mut()
                .map(|f| match f {
                    Ok(bytes) => object::prepare_file_with(bytes, INDEX_TAGS, target, level),
                    Err(e) => Err(std::mem::replace(e, Error::Unsupported { reason: String::new() })),
                })
                .collect();
            self.put_prepared(&store, prepared)
        });
        results_to_py(py, results)
    }

    /// Like ingest_files for Part-10 files (or bare datasets) already in memory.
    fn ingest_buffers<'py>(
        &self,
        py: Python<'py>,
        buffers: Vec<Bound<'py, PyBytes>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let (level, target) = (self.level, self.ingest_codec);
        let slices: Vec<&[u8]> = buffers.iter().map(|b| b.as_bytes()).collect();
        let results = gil::blocking(py, || {
            let prepared =
                slices.iter().map(|b| object::prepare_file_with(b, INDEX_TAGS, target, level)).collect();
            self.put_prepared(&store, prepared)
        });
        results_to_py(py, results)
    }

    /// One dataset received with a known transfer syntax (DIMSE, STOW). Raises on rejection.
    fn ingest_dataset<'py>(
        &self,
        py: Python<'py>,
        dataset: &[u8],
        transfer_syntax: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store()?;
        let (level, target) = (self.level, self.ingest_codec);
        let mut results = gil::blocking(py, || {
            let prepared = vec![object::prepare_dataset(dataset, transfer_syntax, INDEX_TAGS, target, level)];
            self.put_prepared(&store, prepared)
        });
        let (p, existed, text) = results.pop().expect("one result").py_err()?;
        landed_to_py(py, &p, existed, &text)
    }

    /// `ingest_dataset` of a data set the DIMSE reader gathered, consumed without a copy (the
    /// object is empty afterwards).
    fn ingest_received<'py>(
        &self,
        py: Python<'py>,
        received: &Bound<'py, ReceivedDataSet>,
        transfer_syntax: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store()?;
        let (level, target) = (self.level, self.ingest_codec);
        let data =
            received.borrow_mut().inner.take().ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err("received data set already ingested")
            })?;
        let mut results = gil::blocking(py, || {
            let prepared = vec![object::prepare_received(data, transfer_syntax, INDEX_TAGS, target, level)];
            self.put_prepared(&store, prepared)
        });
        let (p, existed, text) = results.pop().expect("one result").py_err()?;
        landed_to_py(py, &p, existed, &text)
    }

    /// (transfer syntax UID, dataset bytes) of a blob, decoded and checked (`verify_reads`).
    fn read<'py>(&self, py: Python<'py>, hash: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
        let store = self.store()?;
        let h = hash_arg(hash)?;
        // Decoded into a pooled buffer (decoded.rs), which the bytes object is then copied
        // from: readers reuse a few warm allocations instead of allocating and zero-filling
        // one per object, on whatever thread they run.
        let mut buf = decoded::take_buffer();
        let read = gil::blocking(py, || read_logical_into(&store, &h, &mut buf, self.read_check));
        let tuple = read.py_err().and_then(|()| {
            let (ts, ds) = object::split_canonical(&buf).py_err()?;
            PyTuple::new(py, [ts.into_pyobject(py)?.into_any(), PyBytes::new(py, ds).into_any()])
        });
        decoded::give_back(buf);
        tuple
    }

    /// (transfer syntax UID, data set) of a blob, decoded and checked (`verify_reads`), the data set left in
    /// the native buffer it was decoded into (a `DecodedObject`, for `send_message`).
    fn read_decoded<'py>(
        &self,
        py: Python<'py>,
        hash: &[u8],
    ) -> PyResult<(String, Bound<'py, DecodedObject>)> {
        let store = self.store()?;
        let h = hash_arg(hash)?;
        let mut buf = decoded::take_buffer();
        let read = gil::blocking(py, || read_logical_into(&store, &h, &mut buf, self.read_check));
        let split = read.and_then(|()| {
            let (ts, ds) = object::split_canonical(&buf)?;
            Ok((ts.to_owned(), buf.len() - ds.len()))
        });
        match split {
            Ok((ts, start)) => Ok((ts, Bound::new(py, DecodedObject::new(buf, start))?)),
            Err(e) => {
                decoded::give_back(buf);
                Err(e).py_err()
            }
        }
    }

    /// Writes `prefix + dataset` of each (hash, prefix, path) to path (via a temporary file and
    /// rename, so a reader never sees half a file). One result per item: None or the exception.
    fn export_files<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(Vec<u8>, Vec<u8>, PathBuf)>,
    ) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let check = self.read_check;
        let results: Vec<Result<(), Error>> = gil::blocking(py, || {
            items
                .iter()
                .map(|(hash, prefix, path)| {
                    let h: Hash = hash
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::NotFound { hash: "(malformed hash)".into() })?;
                    let logical = read_logical(&store, &h, check)?;
                    let (_, ds) = object::split_canonical(&logical)?;
                    write_file(path, prefix, ds)
                })
                .collect()
        });
        let list = PyList::empty(py);
        for r in results {
            match r {
                Ok(()) => list.append(py.None())?,
                Err(e) => list.append(to_py(e).into_value(py))?,
            }
        }
        Ok(list)
    }

    /// Starts the disk reads of these blobs in the background and returns at once
    /// (core::store::BlobStore::prefetch), for a reader about to read them in an order of its
    /// own. Hashes not held locally are skipped.
    fn prefetch(&self, py: Python<'_>, hashes: Vec<Vec<u8>>) -> PyResult<()> {
        let store = self.store()?;
        let hashes: Vec<Hash> = hashes.iter().filter_map(|h| h.as_slice().try_into().ok()).collect();
        gil::blocking(py, || store.prefetch(&hashes));
        Ok(())
    }

    /// A blob as stored: (codec id, logical length, stored bytes), not decoded. For shipping blobs
    /// to a replica, which verifies them itself.
    fn read_stored<'py>(&self, py: Python<'py>, hash: &[u8]) -> PyResult<(u8, u64, Bound<'py, PyBytes>)> {
        let store = self.store()?;
        let h = hash_arg(hash)?;
        let blob = gil::blocking(py, || store.get(&h)).py_err()?;
        Ok((blob.codec, blob.logical_len, PyBytes::new(py, &blob.bytes)))
    }

    /// Stores blobs received as stored bytes (replication, heal): each is decoded and its BLAKE3
    /// checked against its address before anything is written; then one group-committed sync.
    /// One result per item: True (written), False (already present) or the exception.
    /// `tier`: the local tier to write to (a move back from an object store); default: as new
    /// objects (the landing tier, unless a tier holds them already).
    #[pyo3(signature = (items, tier=None))]
    fn put_stored<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(Vec<u8>, u8, u64, Vec<u8>)>,
        tier: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let reserve = self.reserve;
        let results: Vec<Result<bool, Error>> = gil::blocking(py, || {
            let checked: Vec<Result<PutItem<'_>, Error>> = items
                .iter()
                .map(|(hash, codec, logical_len, bytes)| {
                    let h: Hash = hash.as_slice().try_into().map_err(|_| Error::Codec {
                        reason: format!("a blob hash is 32 bytes, got {}", hash.len()),
                    })?;
                    object::decode_verified(&h, Codec::from_u8(*codec)?, bytes, *logical_len)?;
                    Ok(PutItem {
                        hash: h,
                        codec: *codec,
                        logical_len: *logical_len,
                        head: &[],
                        bytes,
                        crc: None,
                    })
                })
                .collect();
            let ok: Vec<PutItem<'_>> = checked.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
            let mut outcomes =
                put_batch(&store, &ok, &reserve, tier).into_iter().map(|r| r.map(|existed| !existed));
            checked
                .into_iter()
                .map(|r| r.and_then(|_| outcomes.next().expect("one outcome per stored item")))
                .collect()
        });
        let list = PyList::empty(py);
        for r in results {
            match r {
                Ok(written) => list.append(written)?,
                Err(e) => list.append(to_py(e).into_value(py))?,
            }
        }
        Ok(list)
    }

    /// Deletes blobs from every tier (durably, one sync per volume touched); how many copies.
    fn delete(&self, py: Python<'_>, hashes: Vec<Vec<u8>>) -> PyResult<u64> {
        let store = self.store()?;
        let hs = hashes.iter().map(|h| hash_arg(h)).collect::<PyResult<Vec<Hash>>>()?;
        gil::blocking(py, || store.delete_many(&hs)).py_err()
    }

    /// The local tiers' names, fastest first.
    fn tier_names(&self) -> PyResult<Vec<String>> {
        Ok(self.store()?.tier_names().into_iter().map(String::from).collect())
    }

    /// Copies blobs from local tier `source` to local tier `dest` re-encoded with `codec`
    /// (one sync), then reads each copy back and checks its hash; the source copies stay until
    /// `delete_in`. One result per hash: (codec used, stored length) or the exception.
    #[pyo3(signature = (hashes, source, dest, codec, level=None))]
    fn copy_between<'py>(
        &self,
        py: Python<'py>,
        hashes: Vec<Vec<u8>>,
        source: usize,
        dest: usize,
        codec: u8,
        level: Option<i32>,
    ) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let hs = hashes.iter().map(|h| hash_arg(h)).collect::<PyResult<Vec<Hash>>>()?;
        let target = Codec::from_u8(codec).py_err()?;
        let (level, reserve) = (level.unwrap_or(self.level), self.reserve);
        let results =
            gil::blocking(py, || tiermove::copy_verified(&store, &hs, source, dest, target, level, &reserve))
                .py_err()?;
        let list = PyList::empty(py);
        for r in results {
            match r {
                Ok(c) => list.append((c.codec, c.stored_len))?,
                Err(e) => list.append(to_py(e).into_value(py))?,
            }
        }
        Ok(list)
    }

    /// Frees the copies local tier `tier` holds of `hashes` (one sync per volume); how many.
    fn delete_in(&self, py: Python<'_>, tier: usize, hashes: Vec<Vec<u8>>) -> PyResult<u64> {
        let store = self.store()?;
        let hs = hashes.iter().map(|h| hash_arg(h)).collect::<PyResult<Vec<Hash>>>()?;
        gil::blocking(py, || store.delete_in(tier, &hs)).py_err()
    }

    /// Live hashes of one local tier, in on-disk order.
    fn tier_hashes<'py>(&self, py: Python<'py>, tier: usize) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let hs = gil::blocking(py, || store.tier_at(tier).map(|t| t.hashes())).py_err()?;
        PyList::new(py, hs.iter().map(|h| PyBytes::new(py, h)))
    }

    /// Per local tier, in order: (name, statistics dict).
    fn tier_stats<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyDict>)>> {
        let store = self.store()?;
        store.tier_stats().iter().map(|(n, s)| Ok((n.clone(), stats_to_py(py, s)?))).collect()
    }

    /// Indices of the local tiers holding a copy of `hash`.
    fn holders(&self, hash: &[u8]) -> PyResult<Vec<usize>> {
        Ok(self.store()?.holders(&hash_arg(hash)?))
    }

    fn contains(&self, hash: &[u8]) -> PyResult<bool> {
        Ok(self.store()?.contains(&hash_arg(hash)?))
    }

    /// Every live blob hash, in on-disk order.
    fn hashes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let store = self.store()?;
        let hs = gil::blocking(py, || store.hashes());
        PyList::new(py, hs.iter().map(|h| PyBytes::new(py, h)))
    }

    /// Re-reads every blob, decodes it and checks its hash (two threads, GIL released).
    /// Returns {checked, ok, bytes, damaged: [(hash, reason)]}.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store()?;
        let (checked, bytes, damaged) = gil::blocking(py, || verify_all(&store));
        let d = PyDict::new(py);
        d.set_item("checked", checked)?;
        d.set_item("ok", checked - damaged.len() as u64)?;
        d.set_item("bytes", bytes)?;
        let list = PyList::empty(py);
        for (h, reason) in damaged {
            list.append((PyBytes::new(py, &h), reason))?;
        }
        d.set_item("damaged", list)?;
        Ok(d)
    }

    fn compact<'py>(&self, py: Python<'py>, threshold: f64) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store()?;
        let report = gil::blocking(py, || store.compact(threshold)).py_err()?;
        let d = PyDict::new(py);
        d.set_item("volumes_compacted", report.volumes_compacted)?;
        d.set_item("records_moved", report.records_moved)?;
        d.set_item("bytes_reclaimed", report.bytes_reclaimed)?;
        d.set_item("errors", report.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        Ok(d)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store()?;
        stats_to_py(py, &store.stats())
    }

    /// Read-only vaults: pick up what the writer appended since open.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        gil::blocking(py, || store.refresh()).py_err()
    }

    /// Releases the store (and the writer lock). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .store
            .lock()
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("vault lock poisoned"))?
            .take();
        gil::blocking(py, move || drop(taken));
        Ok(())
    }
}

fn read_logical(store: &BlobStore, h: &Hash, check: ReadCheck) -> Result<Vec<u8>, Error> {
    let mut logical = Vec::new();
    read_logical_into(store, h, &mut logical, check)?;
    Ok(logical)
}

/// A blob's logical bytes, decoded and checked as `check` says (the Vault's `verify_reads`).
pub(crate) fn read_logical_into(
    store: &BlobStore,
    h: &Hash,
    logical: &mut Vec<u8>,
    check: ReadCheck,
) -> Result<(), Error> {
    let blob = store.get(h)?;
    // `get` has checked the record CRC over exactly these bytes: the codec's CRC is not repeated.
    let codec = Codec::from_u8(blob.codec)?;
    object::decode_read_into(
        h,
        codec,
        &blob.bytes,
        blob.logical_len,
        logical,
        check,
        StoredCrc::RecordChecked,
    )
}

fn write_file(path: &std::path::Path, prefix: &[u8], dataset: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("dcm.part");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(prefix).and_then(|_| f.write_all(dataset)).map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn verify_all(store: &BlobStore) -> (u64, u64, Vec<(Hash, String)>) {
    let hashes = store.hashes();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(4);
    let chunk = hashes.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = hashes
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut bytes = 0u64;
                    let mut damaged = Vec::new();
                    for h in part {
                        match store.get(h).and_then(|b| {
                            bytes += b.bytes.len() as u64;
                            object::decode_verified(h, Codec::from_u8(b.codec)?, &b.bytes, b.logical_len)
                        }) {
                            Ok(_) => {}
                            Err(e) => damaged.push((*h, e.to_string())),
                        }
                    }
                    (part.len() as u64, bytes, damaged)
                })
            })
            .collect();
        handles.into_iter().fold((0, 0, Vec::new()), |(c, b, mut d), h| {
            let (c2, b2, d2) = h.join().expect("verify worker panicked");
            d.extend(d2);
            (c + c2, b + b2, d)
        })
    })
}
