//! dicomvault._native: PyO3 bindings of dicomvault-core.
//!
//! Glue only: type conversion, the one error funnel (errors.rs), the one GIL policy (gil.rs) for
//! every call that touches bytes, and batch entry points so Python crosses the boundary once per
//! batch.

use pyo3::prelude::*;

mod convert;
mod decoded;
mod errors;
mod find_frames;
mod gil;
mod net;
mod primitives;
mod records;
mod retrieve;
mod vault;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<vault::Vault>()?;
    m.add_class::<decoded::DecodedObject>()?;
    m.add_class::<net::PduReader>()?;
    m.add_class::<net::ReceivedDataSet>()?;
    m.add_class::<net::IdentifierPlan>()?;
    m.add_class::<records::InstanceColumns>()?;
    m.add_class::<records::StudyColumns>()?;
    m.add_function(wrap_pyfunction!(records::sending_fields, m)?)?;
    m.add_class::<find_frames::PendingFrames>()?;
    m.add_function(wrap_pyfunction!(net::encode_response, m)?)?;
    m.add_function(wrap_pyfunction!(net::frame_message, m)?)?;
    m.add_function(wrap_pyfunction!(net::send_message, m)?)?;
    m.add_function(wrap_pyfunction!(retrieve::retrieve_batch, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::parse, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::parse_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::blake3, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::encode, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::decode, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::recode, m)?)?;
    m.add_function(wrap_pyfunction!(primitives::cold_encode_version, m)?)?;
    m.add_function(wrap_pyfunction!(decoded::decode_read, m)?)?;
    m.add("CODEC_RAW", dicomvault_core::codec::Codec::Raw as u8)?;
    m.add("CODEC_HOT", dicomvault_core::codec::Codec::Hot as u8)?;
    m.add("CODEC_COLD", dicomvault_core::codec::Codec::Cold as u8)?;
    #[cfg(feature = "extension-module")]
    kernels::register(m)?;
    Ok(())
}

#[cfg(feature = "extension-module")]
mod kernels {
    use pyo3::prelude::*;
    use pyo3::types::PyDict;

    extern "C" {
        fn PyInit__kernels() -> *mut pyo3::ffi::PyObject;
    }

    /// Creates the Cython module and makes it importable as `dicomvault._kernels`.
    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        // SAFETY: the init function is Cython's single-phase init (see build.rs); it returns a new
        // reference to the module or NULL with a Python exception set.
        let module = unsafe { Bound::from_owned_ptr_or_err(py, PyInit__kernels())? };
        let modules = py.import("sys")?.getattr("modules")?.cast_into::<PyDict>()?;
        modules.set_item("dicomvault._kernels", &module)?;
        m.add("_kernels", module)?;
        Ok(())
    }
}
