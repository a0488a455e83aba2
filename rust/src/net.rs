//! The association byte path (core::net) for dimse/fastpath.py: one `PduReader` per established
//! association, read with the GIL released, and the encoder of the responses answered directly.

use std::collections::HashMap;
use std::time::Duration;

use dicomvault_core::net::{self, Conn, IdentifierKey, Out, ResponseFields, Wait};
use dicomvault_core::object;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::decoded::DecodedObject;
use crate::gil;

/// The data set of a C-STORE request as the reader gathered it, handed to
/// `Vault.ingest_received` without a copy into Python bytes (which would then be copied again
/// into the canonical form). `bytes()` copies it out for any other use.
#[pyclass(module = "dicomvault._native")]
pub struct ReceivedDataSet {
    pub inner: Option<object::ReceivedDataSet>,
}

#[pymethods]
impl ReceivedDataSet {
    /// A copy of `data` (tests, and callers with bytes in hand).
    #[new]
    fn new(data: &[u8]) -> Self {
        let mut inner = object::ReceivedDataSet::default();
        inner.extend(data);
        ReceivedDataSet { inner: Some(inner) }
    }

    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, |d| d.len())
    }

    /// The data set bytes (a copy); b"" once ingested.
    fn bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.as_ref().map_or(&[][..], |d| d.data_set()))
    }
}

/// C-STORE-RQ: its data set stays native (see ReceivedDataSet).
const C_STORE_RQ: u16 = 0x0001;

/// Reads whole PDUs from an association's socket (a descriptor Python keeps owning and
/// closing) and reassembles P-DATA. `fast` maps presentation context id -> the Command Field the
/// caller answers itself on that context; every other message is handed back as PDUs.
#[pyclass(module = "dicomvault._native")]
pub struct PduReader {
    pub conn: Conn,
}

#[pymethods]
impl PduReader {
    /// `any_status`: contexts whose fast responses come out whatever their status (else only a
    /// plain Success does, the rest going to pynetdicom as PDUs). `max_data_set`: a C-STORE data
    /// set longer than this (0 = no limit) is dropped as it arrives and comes out as "oversize".
    #[new]
    #[pyo3(signature = (fd, max_pdu, fast, any_status=Vec::new(), max_data_set=0))]
    fn new(
        fd: i32,
        max_pdu: usize,
        fast: HashMap<u8, Vec<u16>>,
        any_status: Vec<u8>,
        max_data_set: usize,
    ) -> Self {
        let assembler = net::Assembler::new(fast).with_any_status(any_status).with_max_data_set(max_data_set);
        PduReader { conn: Conn::new(fd, max_pdu, assembler) }
    }

    /// Waits up to `timeout` seconds (0: only what is already there) for data, or until
    /// `wake_fd` is readable. Returns (outputs, state, reason): state is "ready", "timeout",
    /// "woken" or "closed" (reason: what a close cut short, else None). Outputs, in order:
    /// ("pdu", bytes) for pynetdicom; ("msg", context_id, command_field, message_id,
    /// sop_class_uid, sop_instance_uid, data set or None, message_id_being_responded_to, status or
    /// None, move destination or "") where the data set of a C-STORE-RQ is a ReceivedDataSet and
    /// any other is bytes; ("oversize", context_id, command_field, message_id, sop_class_uid,
    /// sop_instance_uid, bytes received) for a C-STORE over `max_data_set`; ("error", why) = abort.
    #[pyo3(signature = (wake_fd, timeout))]
    fn next<'py>(
        &mut self,
        py: Python<'py>,
        wake_fd: Option<i32>,
        timeout: f64,
    ) -> PyResult<(Bound<'py, PyList>, &'static str, Option<String>)> {
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        let conn = &mut self.conn;
        let (outs, wait) = gil::blocking(py, move || conn.next(wake_fd, timeout));
        let list = PyList::empty(py);
        for out in outs {
            list.append(out_to_py(py, out)?)?;
        }
        let (state, reason) = match wait {
            Wait::Ready => ("ready", None),
            Wait::Timeout => ("timeout", None),
            Wait::Woken => ("woken", None),
            Wait::Closed(reason) => ("closed", reason),
        };
        Ok((list, state, reason))
    }

    /// Acknowledge every read at once (TCP_QUICKACK), for associations on which we send data.
    fn set_quickack(&mut self, on: bool) {
        self.conn.quickack = on;
    }

    /// Bytes received that do not make a whole PDU yet.
    fn buffered(&self) -> usize {
        self.conn.buffered()
    }
}

/// A reader output as the Python tuple `PduReader.next` documents.
pub fn out_to_py<'py>(py: Python<'py>, out: Out) -> PyResult<Bound<'py, PyTuple>> {
    Ok(match out {
        Out::Pdu(bytes) => ("pdu", PyBytes::new(py, &bytes)).into_pyobject(py)?,
        Out::Message { context_id, command, data_set } => {
            let data_set: Option<Bound<'py, PyAny>> = match data_set {
                None => None,
                Some(d) if command.command_field == C_STORE_RQ => {
                    Some(Bound::new(py, ReceivedDataSet { inner: Some(d) })?.into_any())
                }
                Some(d) => Some(PyBytes::new(py, d.data_set()).into_any()),
            };
            (
                "msg",
                context_id,
                command.command_field,
                command.message_id,
                command.sop_class_uid,
                command.sop_instance_uid,
                data_set,
                command.message_id_being_responded_to,
                command.status,
                command.move_destination,
            )
                .into_pyobject(py)?
        }
        Out::Oversize { context_id, command, received } => (
            "oversize",
            context_id,
            command.command_field,
            command.message_id,
            command.sop_class_uid,
            command.sop_instance_uid,
            received,
        )
            .into_pyobject(py)?,
        Out::ProtocolError(why) => ("error", why).into_pyobject(py)?,
    })
}

/// The P-DATA-TF PDU(s) of a response command set without a data set (C-STORE-RSP,
/// C-ECHO-RSP), split to the peer's maximum PDU length (0 = unlimited).
#[pyfunction]
#[pyo3(signature = (context_id, command_field, message_id, sop_class_uid, sop_instance_uid, status,
                    error_comment, max_pdu))]
#[allow(clippy::too_many_arguments)]
pub fn encode_response<'py>(
    py: Python<'py>,
    context_id: u8,
    command_field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    status: u16,
    error_comment: Option<&str>,
    max_pdu: usize,
) -> Bound<'py, PyBytes> {
    let command = net::encode_response(&ResponseFields {
        command_field,
        message_id_being_responded_to: message_id,
        sop_class_uid,
        sop_instance_uid,
        status,
        error_comment: error_comment.unwrap_or(""),
    });
    PyBytes::new(py, &net::pdu::message_pdus(context_id, &command, None, max_pdu))
}

/// The P-DATA-TF PDU(s) of a message whose command set is already encoded, with its data set
/// (e.g. a C-FIND pending response and its identifier), split to the peer's maximum PDU length.
#[pyfunction]
#[pyo3(signature = (context_id, command, data_set, max_pdu))]
pub fn frame_message<'py>(
    py: Python<'py>,
    context_id: u8,
    command: &[u8],
    data_set: Option<&[u8]>,
    max_pdu: usize,
) -> Bound<'py, PyBytes> {
    let len = command.len() + data_set.map_or(0, <[u8]>::len);
    let pdus = gil::bytes_work(py, len, || net::pdu::message_pdus(context_id, command, data_set, max_pdu));
    PyBytes::new(py, &pdus)
}

/// Sends `prefix` (already framed: a pending response) and one DIMSE message on the socket `fd`,
/// its data set (bytes, or a `DecodedObject`) written from where it is without a copy
/// (core::net::send), with the GIL released. `timeout` (seconds, None: none) bounds a wait for a
/// peer that stopped reading.
#[pyfunction]
#[pyo3(signature = (fd, prefix, context_id, command, data_set, max_pdu, timeout=None))]
#[allow(clippy::too_many_arguments)]
pub fn send_message(
    py: Python<'_>,
    fd: i32,
    prefix: &[u8],
    context_id: u8,
    command: &[u8],
    data_set: &Bound<'_, PyAny>,
    max_pdu: usize,
    timeout: Option<f64>,
) -> PyResult<()> {
    let data_set: &[u8] = match data_set.cast::<DecodedObject>() {
        Ok(decoded) => decoded.get().data_set(),
        Err(_) => data_set.cast::<PyBytes>()?.as_bytes(),
    };
    let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
    gil::blocking(py, || net::Framed::new(prefix, context_id, command, data_set, max_pdu).send(fd, timeout))
        .map_err(PyErr::from)
}

/// The elements of a C-FIND's response identifiers (core::net::identifier): built once per query
/// from (tag/VR bytes, 4-byte length, padding byte) per requested key; `encode` then writes one
/// match from its values (str, written as UTF-8, or bytes as they are).
#[pyclass(frozen, module = "dicomvault._native")]
pub struct IdentifierPlan {
    keys: Vec<IdentifierKey>,
}

#[pymethods]
impl IdentifierPlan {
    #[new]
    fn new(keys: Vec<(Vec<u8>, bool, u8)>) -> Self {
        IdentifierPlan {
            keys: keys
                .into_iter()
                .map(|(head, long_length, pad)| IdentifierKey { head, long_length, pad })
                .collect(),
        }
    }

    /// `prefix` then one element per key, from `values` (one per key, in order).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        prefix: &[u8],
        values: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if values.len() != self.keys.len() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{} values for {} keys",
                values.len(),
                self.keys.len()
            )));
        }
        let items: Vec<Bound<'py, PyAny>> = values.iter().collect();
        let mut slices: Vec<&[u8]> = Vec::with_capacity(items.len());
        for item in &items {
            if let Ok(s) = item.cast::<PyString>() {
                slices.push(s.to_str()?.as_bytes());
            } else {
                slices.push(item.cast::<PyBytes>()?.as_bytes());
            }
        }
        Ok(PyBytes::new(py, &net::encode_identifier(prefix, &self.keys, slices)))
    }
}
