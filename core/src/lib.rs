//! dicomvault-core: the byte work of the archive, in pure Rust (no Python here).
//!
//! Data path: [`parse`] reads a Part-10 file or bare dataset and finds the index attributes and the
//! pixel data without copying it; [`hash`] gives the BLAKE3 content address of the canonical bytes;
//! [`codec`] compresses them losslessly; [`store`] places them durably in a tier.
//! [`object`] composes the four for one incoming object.

pub mod attrtext;
pub mod codec;
pub mod error;
pub mod fuzzing;
pub mod hash;
pub mod index_record;
pub mod net;
pub mod object;
pub mod parse;
pub mod pool;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod tiermove;

pub use error::{Error, Result};
