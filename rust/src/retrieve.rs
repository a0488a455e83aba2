//! `retrieve_batch`: a batch of a C-GET's or C-MOVE's C-STORE sub-operations run natively
//! (core::net::retrieve), for dimse/fastretrieve.py. The objects are read from the vault (decoded
//! and checked (`verify_reads`), as `Vault.read_decoded` reads them) on a reader thread, or decoded
//! from the stored bytes the caller read from an object-store tier, all of it with the GIL released.

use std::time::{Duration, Instant};

use dicomvault_core::codec::{Codec, StoredCrc};
use dicomvault_core::hash::Hash;
use dicomvault_core::net::retrieve::{self, Item, Progress, Route, Stop};
use dicomvault_core::net::SubOperations;
use dicomvault_core::object::{self, ReadCheck};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::convert::hash_arg;
use crate::decoded::{self, DecodedObject};
use crate::gil;
use crate::net::{out_to_py, PduReader};
use crate::vault::{read_logical_into, Vault};

impl AsRef<[u8]> for DecodedObject {
    fn as_ref(&self) -> &[u8] {
        self.data_set()
    }
}

/// One object's data set in a pooled buffer, read into it by `read`; its stored syntax must be
/// the one its context was chosen for (the index record's).
fn load_with(
    syntax: &str,
    read: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<DecodedObject, String> {
    let mut buf = decoded::take_buffer();
    let start = read(&mut buf).and_then(|()| {
        let (ts, ds) = object::split_canonical(&buf).map_err(|e| e.to_string())?;
        if ts != syntax {
            return Err(format!("stored in {ts}, indexed as {syntax}"));
        }
        Ok(buf.len() - ds.len())
    });
    match start {
        Ok(start) => Ok(DecodedObject::new(buf, start)),
        Err(why) => {
            decoded::give_back(buf);
            Err(why)
        }
    }
}

/// Stored bytes read by the caller from an object-store tier (digest-checked there), decoded
/// and checked as `Vault.read_decoded` checks a local blob (`_native.decode_read`).
fn decode_stored(
    (codec, stored, logical_len): &(u8, PyBackedBytes, u64),
    hash: &Hash,
    buf: &mut Vec<u8>,
    check: ReadCheck,
) -> Result<(), String> {
    let codec = Codec::from_u8(*codec).map_err(|e| e.to_string())?;
    object::decode_read_into(hash, codec, stored, *logical_len, buf, check, StoredCrc::Unchecked)
        .map_err(|e| e.to_string())
}

fn closed_to_py(closed: Option<Option<String>>) -> Option<String> {
    closed.map(Option::unwrap_or_default)
}

/// Runs the sub-operations `items` ((blob hash, stored transfer syntax, context id, SOP Class
/// UID, SOP Instance UID), each sent in its stored syntax) on the association `fd`, read by
/// `reader`; `rsp` = (fd, context id, command field, SOP Class UID, message id, max PDU) of the
/// C-GET/C-MOVE whose pending responses are made; `requestor` (C-MOVE) the requestor
/// association's reader. Returns (items done, stop, last message id, status, outs, closed,
/// requestor outs, requestor closed, error, unsent, (remaining, completed, seconds since the
/// last pending response or None)), where stop is "end",
/// "load", "send", "await" or "respond" (core::net::retrieve::Stop), closed is None or what the
/// close cut short ("" for nothing), and outs are `PduReader.next` outputs. A pending response
/// is made once `pending_interval` seconds have passed since the last one (0: after every
/// sub-operation); `since_pending`: seconds since the caller made the last one (None: none yet).
/// `stored`: for objects an object-store tier holds, (codec, stored bytes, logical length) of
/// each item, read by the caller; they are decoded here, on `loaders` threads, instead of read
/// from the vault.
#[pyfunction]
#[pyo3(signature = (vault, fd, reader, items, max_pdu, send_timeout, originator, rsp, same_association,
                    requestor, message_id, counts, unsent, wait, pending_interval, since_pending,
                    stored=None, loaders=1))]
#[allow(clippy::too_many_arguments)]
pub fn retrieve_batch<'py>(
    py: Python<'py>,
    vault: &Bound<'py, Vault>,
    fd: i32,
    reader: &Bound<'py, PduReader>,
    items: Vec<(Vec<u8>, String, u8, String, String)>,
    max_pdu: usize,
    send_timeout: Option<f64>,
    originator: Option<(String, u16)>,
    rsp: (i32, u8, u16, String, u16, usize),
    same_association: bool,
    requestor: Option<Bound<'py, PduReader>>,
    message_id: u16,
    counts: (u32, u32, u32, u32),
    unsent: Vec<u8>,
    wait: f64,
    pending_interval: f64,
    since_pending: Option<f64>,
    stored: Option<Vec<(u8, PyBackedBytes, u64)>>,
    loaders: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    if stored.as_ref().is_some_and(|s| s.len() != items.len()) {
        return Err(PyValueError::new_err("stored: one entry per item"));
    }
    let store = vault.get().store()?;
    let check = vault.get().read_check();
    let mut sources: Vec<(Hash, String)> = Vec::with_capacity(items.len());
    let mut subs: Vec<Item> = Vec::with_capacity(items.len());
    for (hash, syntax, context_id, sop_class_uid, sop_instance_uid) in items {
        sources.push((hash_arg(&hash)?, syntax));
        subs.push(Item { context_id, sop_class_uid, sop_instance_uid });
    }
    let (rsp_fd, rsp_context_id, rsp_command_field, rsp_class, rsp_message_id, rsp_max_pdu) = rsp;
    let route = Route {
        store_fd: fd,
        store_max_pdu: max_pdu,
        send_timeout: send_timeout.map(|t| Duration::from_secs_f64(t.max(0.0))),
        originator: originator.as_ref().map(|(ae, id)| (ae.as_str(), *id)),
        rsp_fd,
        rsp_context_id,
        rsp_command_field,
        rsp_sop_class_uid: &rsp_class,
        rsp_message_id,
        rsp_max_pdu,
        same_association,
        wait: Duration::from_secs_f64(wait.max(0.0)),
        pending_interval: Duration::from_secs_f64(pending_interval.max(0.0)),
    };
    let (remaining, completed, failed, warning) = counts;
    let last_pending =
        since_pending.and_then(|s| Instant::now().checked_sub(Duration::from_secs_f64(s.max(0.0))));
    let mut progress = Progress {
        message_id,
        counts: SubOperations { remaining, completed, failed, warning },
        unsent,
        last_pending,
    };
    let mut reader = reader.try_borrow_mut()?;
    let mut requestor = requestor.as_ref().map(|r| r.try_borrow_mut()).transpose()?;
    let (done, stop) = {
        let conn = &mut reader.conn;
        let req = requestor.as_deref_mut().map(|r| &mut r.conn);
        let (route, subs, sources, progress, stored) = (&route, &subs, &sources, &mut progress, &stored);
        gil::blocking(py, move || {
            let load = |i: usize| {
                let (hash, syntax) = &sources[i];
                match stored {
                    Some(stored) => load_with(syntax, |buf| decode_stored(&stored[i], hash, buf, check)),
                    None => load_with(syntax, |buf| {
                        read_logical_into(&store, hash, buf, check).map_err(|e| e.to_string())
                    }),
                }
            };
            if stored.is_none() {
                // the batch's objects read from the disk in parallel, not one at a time as sent
                store.prefetch(&sources.iter().map(|(h, _)| *h).collect::<Vec<_>>());
            }
            retrieve::run(route, conn, req, subs, load, loaders, progress)
        })
    };
    let (kind, message_id, status, outs, closed, req_outs, req_closed, error) = match stop {
        Stop::End => ("end", None, None, Vec::new(), None, Vec::new(), None, None),
        Stop::Load(why) => ("load", None, None, Vec::new(), None, Vec::new(), None, Some(why)),
        Stop::Send { message_id, error } => {
            ("send", Some(message_id), None, Vec::new(), None, Vec::new(), None, Some(error.to_string()))
        }
        Stop::Await { message_id, status, outs, closed, requestor_outs, requestor_closed } => {
            ("await", Some(message_id), status, outs, closed, requestor_outs, requestor_closed, None)
        }
        Stop::Respond(error) => {
            ("respond", None, None, Vec::new(), None, Vec::new(), None, Some(error.to_string()))
        }
    };
    let to_list = |outs: Vec<_>| -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for out in outs {
            list.append(out_to_py(py, out)?)?;
        }
        Ok(list)
    };
    (
        done,
        kind,
        message_id.unwrap_or(progress.message_id),
        status,
        to_list(outs)?,
        closed_to_py(closed),
        to_list(req_outs)?,
        closed_to_py(req_closed),
        error,
        PyBytes::new(py, &progress.unsent),
        (
            progress.counts.remaining,
            progress.counts.completed,
            progress.last_pending.map(|t| t.elapsed().as_secs_f64()),
        ),
    )
        .into_pyobject(py)
}
