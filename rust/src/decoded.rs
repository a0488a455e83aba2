//! `DecodedObject`: a data set decoded into a native buffer, handed to `send_message` as it is.
//!
//! Why: a retrieve only writes the data set out. Copying each decoded object into a Python
//! bytes object (0.5 MB per CT slice) cost ~4% of a C-GET's server CPU, and allocating the
//! buffer fresh would zero-fill it; here the buffers go back to a small pool when the Python
//! object is released, so a retrieve of same-size objects reuses them without either.

use dicomvault_core::codec::{Codec, StoredCrc};
use dicomvault_core::object::{self, ReadCheck};
use dicomvault_core::pool::Pool;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::hash_arg;
use crate::errors::IntoPy;
use crate::gil;

/// Buffers kept for reuse (a retrieve holds the read-ahead's few at a time) ...
const KEEP_BUFFERS: usize = 8;
/// ... and none larger than this (a big multi-frame object is not kept).
const KEEP_BYTES: usize = 32 << 20;

static FREE: Pool<Vec<u8>> = Pool::new(KEEP_BUFFERS);

/// A buffer from the pool (its bytes are stale: the decoder overwrites them), or a new one.
pub fn take_buffer() -> Vec<u8> {
    FREE.take()
}

/// Buffers put in the pool when a vault opens, of this size (a CT or MR slice fits) ...
const WARM_BUFFERS: usize = 2;
const WARM_BYTES: usize = 1 << 20;

/// ... with their pages already mapped, so that the first objects a new process decodes (the
/// first image of its first retrieve) do not take a page fault per 4 KiB of a fresh buffer
/// (~130 faults, ~0.35 ms for a 512 KiB CT slice on this machine). Idempotent.
pub fn prewarm() {
    // Bounded, not `while idle < WARM_BUFFERS`: a pool that kept nothing must not spin here.
    for _ in FREE.idle()..WARM_BUFFERS {
        let mut buf = Vec::with_capacity(WARM_BYTES);
        buf.resize(WARM_BYTES, 0x55u8); // writes (a zero fill could map no page), so maps, every page
        std::hint::black_box(&mut buf); // not a dead store: the pages are the point
        buf.clear();
        FREE.give(buf);
    }
}

pub fn give_back(buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_BYTES {
        return;
    }
    FREE.give(buf);
}

/// The data set of a decoded, hash-verified object (`Vault.read_decoded`). `send_message` sends
/// it without a copy; `bytes()` copies it out for anything else.
#[pyclass(frozen, module = "dicomvault._native")]
pub struct DecodedObject {
    /// The canonical object (transfer syntax UID, NUL, data set) ...
    buf: Vec<u8>,
    /// ... whose data set starts here.
    start: usize,
}

impl DecodedObject {
    pub fn new(buf: Vec<u8>, start: usize) -> Self {
        assert!(start <= buf.len());
        DecodedObject { buf, start }
    }

    pub fn data_set(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for DecodedObject {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

#[pymethods]
impl DecodedObject {
    fn __len__(&self) -> usize {
        self.data_set().len()
    }

    /// The data set bytes (a copy).
    fn bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.data_set())
    }
}

/// Stored bytes read from elsewhere (an object-store tier, its digest of the stored bytes
/// checked; not a local blob-store record, so the codec checks its own CRC too) decoded into a
/// pooled native buffer and checked as `verify_reads` says (against the checksum stored with
/// them, else the blob's hash), off the GIL: (transfer syntax UID, data set). Why: the cold codec's decode is what paces a retrieve from an object store, and
/// `decode` + `blake3` took the GIL back between them and copied each object twice (into
/// bytes, then its data set out of those); here the retrieve's readers decode on all cores and
/// the sender gets the buffer.
#[pyfunction]
pub fn decode_read<'py>(
    py: Python<'py>,
    codec_id: u8,
    stored: &[u8],
    logical_len: u64,
    hash: &[u8],
    verify_reads: &str,
) -> PyResult<(String, Bound<'py, DecodedObject>)> {
    let (codec, h) = (Codec::from_u8(codec_id).py_err()?, hash_arg(hash)?);
    let check = ReadCheck::parse(verify_reads).py_err()?;
    let mut buf = take_buffer();
    let read = gil::bytes_work(py, stored.len().max(logical_len as usize), || {
        object::decode_read_into(&h, codec, stored, logical_len, &mut buf, check, StoredCrc::Unchecked)?;
        let (ts, ds) = object::split_canonical(&buf)?;
        Ok((ts.to_owned(), buf.len() - ds.len()))
    });
    match read {
        Ok((ts, start)) => Ok((ts, Bound::new(py, DecodedObject::new(buf, start))?)),
        Err(e) => {
            give_back(buf);
            Err(e).py_err()
        }
    }
}
