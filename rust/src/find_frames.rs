//! The pending responses of a C-FIND, framed a chunk of index rows at a time
//! (core::net::find_frames) for dimse/fastpath.py.

use dicomvault_core::net::find_frames::{FindElement, FindFrames};
use dicomvault_core::net::IdentifierKey;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::{errors, gil};

/// (tag/VR bytes, 4-byte length, padding byte, index column or None, fallback text, blank)
type Element = (Vec<u8>, bool, u8, Option<usize>, String, bool);

/// Built once per C-FIND (dimse/find.py `IdentifierEncoder.pending_frames`); `frame` then turns
/// a list of rows into their pending responses' P-DATA-TF bytes.
#[pyclass(frozen, module = "dicomvault._native")]
pub struct PendingFrames {
    inner: FindFrames,
}

#[pymethods]
impl PendingFrames {
    #[new]
    #[pyo3(signature = (elements, columns, ascii_prefix, utf8_prefix, context_id, command, max_pdu))]
    fn new(
        elements: Vec<Element>,
        columns: usize,
        ascii_prefix: Option<Vec<u8>>,
        utf8_prefix: Vec<u8>,
        context_id: u8,
        command: Vec<u8>,
        max_pdu: usize,
    ) -> PyResult<Self> {
        if let Some(c) = elements.iter().filter_map(|e| e.3).find(|&c| c >= columns) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("column {c} of {columns}")));
        }
        let elements = elements
            .into_iter()
            .map(|(head, long_length, pad, column, fallback, blank)| FindElement {
                key: IdentifierKey { head, long_length, pad },
                column,
                fallback,
                blank,
            })
            .collect();
        Ok(PendingFrames {
            inner: FindFrames { elements, columns, ascii_prefix, utf8_prefix, context_id, command, max_pdu },
        })
    }

    /// The pending responses of `rows` (each a list of str, one per column), one after another.
    /// The texts are gathered under the GIL, then framed by the GIL policy (gil.rs) on their size:
    /// a batch of 64 matches is ~18 KB.
    fn frame<'py>(&self, py: Python<'py>, rows: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyBytes>> {
        let columns = self.inner.columns;
        let mut items: Vec<Bound<'py, PyString>> = Vec::with_capacity(rows.len() * columns);
        let mut widths = Vec::with_capacity(rows.len());
        for row in rows.iter() {
            let row = row.cast_into::<PyList>()?;
            widths.push(row.len());
            for item in row.iter() {
                items.push(item.cast_into::<PyString>()?);
            }
        }
        let texts = items.iter().map(|s| s.to_str()).collect::<PyResult<Vec<&str>>>()?;
        let total: usize =
            texts.iter().map(|t| t.len()).sum::<usize>() + rows.len() * self.inner.command.len();
        let framed = gil::bytes_work(py, total, || {
            let mut out = Vec::with_capacity(total + widths.len() * 256);
            let mut scratch = Vec::with_capacity(512);
            let mut at = 0;
            for &width in &widths {
                self.inner.push(&mut out, &mut scratch, &texts[at..at + width])?;
                at += width;
            }
            Ok(out)
        });
        Ok(PyBytes::new(py, &framed.map_err(errors::frame_error)?))
    }
}
