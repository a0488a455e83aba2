//! `DecodedObject`: a data set decoded into a native buffer, handed to `send_message` as it is.
//!
//! Why: a retrieve only writes the data set out. Copying each decoded object into a Python
//! bytes object (0.5 MB per CT slice) cost ~4% of a C-GET's server CPU, and allocating the
//! buffer fresh would zero-fill it; here the buffers go back to a small pool when the Python
//! object is released, so a retrieve of same-size objects reuses them without either.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Buffers kept for reuse (a retrieve holds the read-ahead's few at a time) ...
const KEEP_BUFFERS: usize = 8;
/// ... and none larger than this (a big multi-frame object is not kept).
const KEEP_BYTES: usize = 32 << 20;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer from the pool (its bytes are stale: the decoder overwrites them), or a new one.
pub fn take_buffer() -> Vec<u8> {
    FREE.lock().ok().and_then(|mut free| free.pop()).unwrap_or_default()
}

pub fn give_back(buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_BYTES {
        return;
    }
    if let Ok(mut free) = FREE.lock() {
        if free.len() < KEEP_BUFFERS {
            free.push(buf);
        }
    }
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
