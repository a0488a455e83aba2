//! Lossless codecs (STUB: interface only, being implemented).

use crate::error::{Error, Result};

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// The hot codec: pixel-aware filter on uncompressed pixel data + zstd; zstd on the rest.
    Hot = 1,
}

impl Codec {
    pub fn from_u8(v: u8) -> Result<Codec> {
        match v {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Hot),
            _ => Err(Error::Codec { reason: format!("unknown codec id {v}") }),
        }
    }
}

/// Where uncompressed pixel samples sit inside the buffer being encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelLayout {
    pub offset: usize,
    pub length: usize,
    pub bytes_per_sample: u8,
    pub big_endian: bool,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub planar: bool,
}

pub fn encode_hot(logical: &[u8], _layout: Option<&PixelLayout>, _level: i32) -> Result<(Codec, Vec<u8>)> {
    Ok((Codec::Raw, logical.to_vec()))
}

pub fn decode(codec: Codec, stored: &[u8], _logical_len: usize) -> Result<Vec<u8>> {
    match codec {
        Codec::Raw => Ok(stored.to_vec()),
        Codec::Hot => Err(Error::Codec { reason: "hot codec not built yet".into() }),
    }
}
