//! Blob store (STUB: interface only, being implemented).
