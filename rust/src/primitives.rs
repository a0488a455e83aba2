//! The core's single-object primitives, for tests and benchmarks (GIL: crate::gil's policy).

use dicomvault_core::codec::{self, Codec};
use dicomvault_core::hash;
use dicomvault_core::object;
use dicomvault_core::parse::{self as dicom, INDEX_TAGS};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::parsed_to_py;
use crate::errors::IntoPy;
use crate::gil;

/// Parses a Part-10 file or bare dataset; returns the index attributes and pixel location.
#[pyfunction]
pub fn parse<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let parsed = gil::bytes_work(py, data.len(), || dicom::parse_file(data, INDEX_TAGS)).py_err()?;
    parsed_to_py(py, &parsed)
}

/// Parses a dataset with a known transfer syntax.
#[pyfunction]
pub fn parse_dataset<'py>(
    py: Python<'py>,
    data: &[u8],
    transfer_syntax: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let parsed = gil::bytes_work(py, data.len(), || dicom::parse_dataset(data, transfer_syntax, INDEX_TAGS))
        .py_err()?;
    parsed_to_py(py, &parsed)
}

/// BLAKE3 digest (32 bytes).
#[pyfunction]
pub fn blake3<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    let h = gil::bytes_work(py, data.len(), || hash::hash(data));
    PyBytes::new(py, &h)
}

/// A file's bytes → (codec id, stored bytes, logical length), exactly as ingest would store it
/// for a tier with codec `codec` (0 raw, 1 hot, 2 cold; cold falls back to hot for what its
/// model does not code, and the codec id returned says which was used).
#[pyfunction]
#[pyo3(signature = (data, level=1, codec=1))]
pub fn encode<'py>(
    py: Python<'py>,
    data: &[u8],
    level: i32,
    codec: u8,
) -> PyResult<(u8, Bound<'py, PyBytes>, u64)> {
    let target = Codec::from_u8(codec).py_err()?;
    let p = gil::bytes_work(py, data.len(), || object::prepare_file_with(data, INDEX_TAGS, target, level))
        .py_err()?;
    Ok((p.codec as u8, PyBytes::new(py, &p.stored_vec()), p.logical_len))
}

/// A stored blob re-encoded for a tier with codec `target` (what a tier move stores):
/// (codec id used, stored bytes). The logical bytes are unchanged, so the blob's hash is too.
#[pyfunction]
#[pyo3(signature = (codec_id, stored, logical_len, target, level=1))]
pub fn recode<'py>(
    py: Python<'py>,
    codec_id: u8,
    stored: &[u8],
    logical_len: u64,
    target: u8,
    level: i32,
) -> PyResult<(u8, Bound<'py, PyBytes>)> {
    let (codec, target) = (Codec::from_u8(codec_id).py_err()?, Codec::from_u8(target).py_err()?);
    let (used, out) = gil::bytes_work(py, stored.len().max(logical_len as usize), || {
        let logical = codec::decode(codec, stored, logical_len as usize)?;
        object::encode_canonical(&logical, target, level)
    })
    .py_err()?;
    Ok((used as u8, PyBytes::new(py, &out)))
}

/// The cold codec's stream of canonical bytes (what `decode` gives) in an older format
/// `version` (2 to 6), as archives written before today's format hold them: for tests.
#[pyfunction]
pub fn cold_encode_version<'py>(
    py: Python<'py>,
    logical: &[u8],
    version: u8,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = gil::bytes_work(py, logical.len(), || object::encode_canonical_cold_version(logical, version))
        .py_err()?;
    Ok(PyBytes::new(py, &out))
}

/// Inverse of the codec part of `encode`: the canonical bytes (transfer syntax, NUL, dataset).
#[pyfunction]
pub fn decode<'py>(
    py: Python<'py>,
    codec_id: u8,
    stored: &[u8],
    logical_len: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = Codec::from_u8(codec_id).py_err()?;
    let out = gil::bytes_work(py, stored.len().max(logical_len as usize), || {
        codec::decode(codec, stored, logical_len as usize)
    })
    .py_err()?;
    let _ = object::split_canonical(&out).py_err()?;
    Ok(PyBytes::new(py, &out))
}
