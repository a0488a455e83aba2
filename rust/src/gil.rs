//! The GIL policy, written once. Every binding runs its native work through one of these two:
//!
//! - [`blocking`]: anything that can wait (disk I/O and fdatasync, a socket, a lock another
//!   thread holds) or walks a batch. Always without the GIL: a thread waiting on the disk must
//!   never stop the others from running Python.
//! - [`bytes_work`]: pure computation over `len` bytes (parse, hash, encode, decode). Without
//!   the GIL from [`INLINE_BYTES`] up; below that it keeps it. Why: releasing costs little, but
//!   taking the GIL back waits for whoever holds it to let go, which a thread running Python does
//!   only at its switch interval (5 ms by default). Work on a few KiB takes microseconds, so
//!   releasing for it can only make its caller wait longer, while the work it would let other
//!   threads do in the meantime is as small.

use pyo3::Python;

/// Below this many bytes, pure computation keeps the GIL (BLAKE3 of 16 KiB: ~4 µs here).
pub const INLINE_BYTES: usize = 16 << 10;

/// Runs `f`, which may block, without the GIL.
pub fn blocking<T: Send, F: FnOnce() -> T + Send>(py: Python<'_>, f: F) -> T {
    py.detach(f)
}

/// Runs `f`, pure computation over `len` bytes: without the GIL unless `len` is small.
pub fn bytes_work<T: Send, F: FnOnce() -> T + Send>(py: Python<'_>, len: usize, f: F) -> T {
    if len < INLINE_BYTES {
        f()
    } else {
        py.detach(f)
    }
}
