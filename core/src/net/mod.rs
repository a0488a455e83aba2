//! The DICOM upper-layer byte path of an established association (PS3.8 §9.3): PDU framing,
//! P-DATA reassembly, and the command sets of the messages the archive answers itself.
//!
//! pynetdicom negotiates the association and keeps every DIMSE service; what arrives afterwards is
//! read here, off the GIL, so the per-PDU work (a 512 KB CT slice is five 128 KB PDUs) costs no
//! Python. [`conn::Conn`] turns socket bytes into whole PDUs; [`assembler::Assembler`] turns the
//! P-DATA PDUs into either complete "fast" messages (C-STORE-RQ, C-ECHO-RQ on contexts the caller
//! names), answered by the archive directly with [`command::encode_response`], or re-framed PDUs
//! handed back to pynetdicom unchanged in meaning (C-MOVE, release, abort, ...);
//! [`identifier`] writes the response identifiers of the C-FINDs answered here, [`find_frames`]
//! whole chunks of their pending responses.

pub mod assembler;
pub mod command;
pub mod conn;
pub mod find_frames;
pub mod identifier;
pub mod pdu;
pub mod retrieve;
pub mod send;
#[cfg(test)]
mod tests;

pub use assembler::{Assembler, Out};
pub use command::{
    encode_response, encode_retrieve_pending, encode_store_rq, Command, ResponseFields, SubOperations,
};
pub use conn::{Conn, Wait};
pub use identifier::{encode_identifier, IdentifierKey};
pub use send::Framed;
