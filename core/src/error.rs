//! One error type for the whole core. The Python bindings map each variant to one Python exception
//! class in a single place (rust/src/errors.rs), so variants are grouped by what a caller does about
//! them, not by the module that raised them.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a DICOM object at all (no preamble/DICM and no plausible dataset start).
    #[error("not DICOM: {reason}")]
    NotDicom { reason: String },

    /// DICOM framing is broken: truncated value, impossible length, bad item delimiter...
    /// `tag` is the element being read when it failed, `offset` is from the start of the input.
    #[error("malformed DICOM at offset {offset}{}: {reason}", fmt_tag(*.tag))]
    Malformed { offset: u64, tag: Option<u32>, reason: String },

    /// A composite instance needs Study, Series and SOP Instance UIDs to be filed; this has not.
    #[error("required attribute {keyword} ({:04X},{:04X}) is missing or empty", .tag >> 16, .tag & 0xFFFF)]
    MissingAttribute { keyword: &'static str, tag: u32 },

    /// Valid DICOM that this build cannot keep (e.g. an unknown transfer syntax with no framing rule).
    #[error("unsupported: {reason}")]
    Unsupported { reason: String },

    /// A stored payload failed to decode (corrupt codec stream or header).
    #[error("codec error: {reason}")]
    Codec { reason: String },

    /// Bytes read back do not hash to their address.
    #[error("hash mismatch for blob {expected}: content hashes to {actual}")]
    HashMismatch { expected: String, actual: String },

    /// No blob with this hash in the store.
    #[error("blob {hash} not found")]
    NotFound { hash: String },

    /// The device is full (ENOSPC/EDQUOT). Nothing partial was left behind.
    #[error("storage full writing {path}: {source}")]
    StorageFull { path: PathBuf, source: std::io::Error },

    /// On-disk structure is damaged beyond what crash recovery repairs automatically.
    #[error("corrupt store file {path} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },

    /// Another process holds the store for writing, or a write was attempted on a read-only store.
    #[error("store at {path} is {reason}")]
    Locked { path: PathBuf, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn fmt_tag(tag: Option<u32>) -> String {
    match tag {
        Some(t) => format!(" in tag ({:04X},{:04X})", t >> 16, t & 0xFFFF),
        None => String::new(),
    }
}

impl Error {
    pub fn malformed(offset: usize, tag: Option<u32>, reason: impl Into<String>) -> Self {
        Error::Malformed { offset: offset as u64, tag, reason: reason.into() }
    }

    /// The same failure again, for every other item of a batch it stopped: the same variant
    /// (a full disk stays `StorageFull` for each object, never some other kind), the same text.
    pub fn again(&self) -> Self {
        let io_again = |e: &std::io::Error| match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        };
        match self {
            Error::NotDicom { reason } => Error::NotDicom { reason: reason.clone() },
            Error::Malformed { offset, tag, reason } => {
                Error::Malformed { offset: *offset, tag: *tag, reason: reason.clone() }
            }
            Error::MissingAttribute { keyword, tag } => Error::MissingAttribute { keyword, tag: *tag },
            Error::Unsupported { reason } => Error::Unsupported { reason: reason.clone() },
            Error::Codec { reason } => Error::Codec { reason: reason.clone() },
            Error::HashMismatch { expected, actual } => {
                Error::HashMismatch { expected: expected.clone(), actual: actual.clone() }
            }
            Error::NotFound { hash } => Error::NotFound { hash: hash.clone() },
            Error::StorageFull { path, source } => {
                Error::StorageFull { path: path.clone(), source: io_again(source) }
            }
            Error::Corrupt { path, offset, reason } => {
                Error::Corrupt { path: path.clone(), offset: *offset, reason: reason.clone() }
            }
            Error::Locked { path, reason } => Error::Locked { path: path.clone(), reason: reason.clone() },
            Error::Io { path, source } => Error::Io { path: path.clone(), source: io_again(source) },
        }
    }

    /// Wraps an I/O error with the path it concerns, turning ENOSPC/EDQUOT into `StorageFull`
    /// so callers can answer "out of resources" rather than a generic failure.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::StorageFull { path, source },
            _ => Error::Io { path, source },
        }
    }
}
