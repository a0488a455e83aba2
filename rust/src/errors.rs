//! The one place core errors become Python exceptions.

use dicomvault_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(dicomvault._native, DicomVaultError, PyException, "Base of every dicomvault error.");
create_exception!(dicomvault._native, NotDicomError, DicomVaultError, "The input is not DICOM.");
create_exception!(dicomvault._native, MalformedError, DicomVaultError, "Broken DICOM framing.");
create_exception!(
    dicomvault._native,
    MissingAttributeError,
    MalformedError,
    "A required attribute (Study/Series/SOP Instance UID) is missing."
);
create_exception!(
    dicomvault._native,
    UnsupportedError,
    DicomVaultError,
    "Valid DICOM this build cannot keep."
);
create_exception!(dicomvault._native, CodecError, DicomVaultError, "A stored payload failed to decode.");
create_exception!(dicomvault._native, IntegrityError, DicomVaultError, "Bytes do not hash to their address.");
create_exception!(dicomvault._native, NotFoundError, DicomVaultError, "No blob with that hash.");
create_exception!(dicomvault._native, StorageFullError, DicomVaultError, "The device is full.");
create_exception!(dicomvault._native, CorruptError, DicomVaultError, "On-disk structure is damaged.");
create_exception!(dicomvault._native, LockedError, DicomVaultError, "Held by another writer, or read-only.");
create_exception!(dicomvault._native, StoreIOError, DicomVaultError, "An I/O error, with the path.");

pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::NotDicom { .. } => NotDicomError::new_err(msg),
        Error::Malformed { .. } => MalformedError::new_err(msg),
        Error::MissingAttribute { .. } => MissingAttributeError::new_err(msg),
        Error::Unsupported { .. } => UnsupportedError::new_err(msg),
        Error::Codec { .. } => CodecError::new_err(msg),
        Error::HashMismatch { .. } => IntegrityError::new_err(msg),
        Error::NotFound { .. } => NotFoundError::new_err(msg),
        Error::StorageFull { .. } => StorageFullError::new_err(msg),
        Error::Corrupt { .. } => CorruptError::new_err(msg),
        Error::Locked { .. } => LockedError::new_err(msg),
        Error::Io { .. } => StoreIOError::new_err(msg),
    }
}

/// `?`-friendly conversion for results coming out of the core.
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DicomVaultError", py.get_type::<DicomVaultError>())?;
    m.add("NotDicomError", py.get_type::<NotDicomError>())?;
    m.add("MalformedError", py.get_type::<MalformedError>())?;
    m.add("MissingAttributeError", py.get_type::<MissingAttributeError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("CodecError", py.get_type::<CodecError>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("StorageFullError", py.get_type::<StorageFullError>())?;
    m.add("CorruptError", py.get_type::<CorruptError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("StoreIOError", py.get_type::<StoreIOError>())?;
    Ok(())
}

/// A chunk of C-FIND matches that cannot be framed natively (find_frames.rs): the caller redoes
/// it in Python, which raises its own error for the same row.
pub fn frame_error(err: dicomvault_core::net::find_frames::FrameError) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(err.to_string())
}
