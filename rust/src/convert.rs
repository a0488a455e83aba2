//! Rust values → Python objects, and argument checks.

use dicomvault_core::attrtext::{decode_index_attrs, keyword};
use dicomvault_core::hash::Hash;
use dicomvault_core::object::Landed;
use dicomvault_core::parse::{Attr, Parsed, INDEX_TAGS};
use dicomvault_core::store::Stats;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

pub fn hash_arg(h: &[u8]) -> PyResult<Hash> {
    h.try_into().map_err(|_| PyValueError::new_err(format!("a blob hash is 32 bytes, got {}", h.len())))
}

fn vr_str(vr: &[u8; 2]) -> String {
    String::from_utf8_lossy(vr).into_owned()
}

pub fn attrs_to_py<'py>(py: Python<'py>, attrs: &[Attr]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for a in attrs {
        list.append((a.tag, vr_str(&a.vr), PyBytes::new(py, &a.value)))?;
    }
    Ok(list)
}

/// The index attributes as (tag, text) (attrtext.rs), or None: the Python path decodes them.
pub type IndexText = Option<Vec<(u32, String)>>;

/// The keyword of each index tag as an interned Python str, in INDEX_TAGS order, made once:
/// every ingested object's dict has ~40 of them as keys.
static KEYWORDS: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

fn keyword_str<'py>(py: Python<'py>, tag: u32) -> Option<&'py Bound<'py, PyString>> {
    let all = KEYWORDS.get_or_init(py, || {
        INDEX_TAGS.iter().map(|&t| PyString::intern(py, keyword(t).unwrap_or_default()).unbind()).collect()
    });
    INDEX_TAGS.binary_search(&tag).ok().map(|i| all[i].bind(py))
}

fn index_text_to_py<'py>(py: Python<'py>, text: &IndexText) -> PyResult<Bound<'py, PyAny>> {
    let Some(items) = text else { return Ok(py.None().into_bound(py)) };
    let d = PyDict::new(py);
    for (tag, value) in items {
        match keyword_str(py, *tag) {
            Some(k) => d.set_item(k, value)?,
            // A tag outside INDEX_TAGS (decode_index_attrs knows its keyword all the same).
            None => d.set_item(keyword(*tag).unwrap_or_default(), value)?,
        }
    }
    Ok(d.into_any())
}

pub fn parsed_to_py<'py>(py: Python<'py>, p: &Parsed) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dataset_offset", p.dataset_offset)?;
    d.set_item("transfer_syntax", &p.transfer_syntax)?;
    d.set_item("ts_inferred", p.ts_inferred)?;
    d.set_item("meta", attrs_to_py(py, &p.meta)?)?;
    d.set_item("attrs", attrs_to_py(py, &p.attrs)?)?;
    d.set_item("index_attrs", index_text_to_py(py, &decode_index_attrs(&p.attrs))?)?;
    match &p.pixel {
        Some(px) => {
            let pd = PyDict::new(py);
            pd.set_item("offset", px.offset)?;
            pd.set_item("length", px.length)?;
            pd.set_item("encapsulated", px.encapsulated)?;
            pd.set_item("rows", px.rows)?;
            pd.set_item("columns", px.columns)?;
            pd.set_item("bits_allocated", px.bits_allocated)?;
            pd.set_item("samples_per_pixel", px.samples_per_pixel)?;
            pd.set_item("number_of_frames", px.number_of_frames)?;
            d.set_item("pixel", pd)?;
        }
        None => d.set_item("pixel", py.None())?,
    }
    Ok(d)
}

/// One ingested object. `text`: its index attributes decoded (without the GIL, by the caller);
/// only when they are not (None) does the dict carry them raw, as `attrs`, for the Python path.
pub fn landed_to_py<'py>(
    py: Python<'py>,
    p: &Landed,
    existed: bool,
    text: &IndexText,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "hash"), PyBytes::new(py, &p.hash))?;
    d.set_item(intern!(py, "transfer_syntax"), &p.parsed.transfer_syntax)?;
    d.set_item(intern!(py, "ts_inferred"), p.parsed.ts_inferred)?;
    d.set_item(intern!(py, "prefix"), PyBytes::new(py, &p.prefix))?;
    d.set_item(intern!(py, "index_attrs"), index_text_to_py(py, text)?)?;
    if text.is_none() {
        d.set_item(intern!(py, "attrs"), attrs_to_py(py, &p.parsed.attrs)?)?;
    }
    d.set_item(intern!(py, "logical_len"), p.logical_len)?;
    d.set_item(intern!(py, "stored_len"), p.stored_len)?;
    d.set_item(intern!(py, "codec"), p.codec as u8)?;
    d.set_item(intern!(py, "existed"), existed)?;
    Ok(d)
}

pub fn stats_to_py<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("objects", s.objects)?;
    d.set_item("stored_bytes", s.stored_bytes)?;
    d.set_item("logical_bytes", s.logical_bytes)?;
    d.set_item("garbage_bytes", s.garbage_bytes)?;
    d.set_item("disk_bytes", s.disk_bytes)?;
    d.set_item("volumes", s.volumes)?;
    d.set_item("corrupt_records", s.corrupt_records)?;
    d.set_item("syncs", s.syncs)?;
    Ok(d)
}
