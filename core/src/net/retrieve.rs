//! The C-STORE sub-operations of a C-GET or C-MOVE, a batch at a time, with no Python per object
//! (dimse/fastretrieve.py drives it).
//!
//! Why: with the objects read, framed and sent natively, what was left per sub-operation of a
//! retrieve was Python: the read-ahead's hand-off of each object between two threads (and the GIL
//! between them), the C-STORE-RQ and pending response packed by `struct`, the response read
//! through a Python loop. On 2 cores that was a fifth of a C-GET's server CPU (perf, 300-slice CT).
//! Here one call runs a batch: a reader thread loads the objects in order, a few ahead, while
//! this one writes each C-STORE-RQ with its data set, reads its C-STORE-RSP and makes the pending
//! response. Anything but a plain Success with nothing else read stops the batch and goes back to
//! the caller, which acts on it exactly as it did before (warnings, failures, a C-CANCEL, an
//! association that ends, a response slower than `wait`), so the PS3.4 semantics stay in one
//! place.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::assembler::Out;
use super::command::{encode_retrieve_pending, encode_store_rq, SubOperations, C_STORE_RSP};
use super::conn::{Conn, Wait};
use super::pdu::{message_pdus, A_ABORT};
use super::send::{write_all, Framed};

/// Objects loaded ahead of the one being sent (readahead.py's depth).
pub const READ_AHEAD: usize = 4;
const SUCCESS: u16 = 0x0000;
/// A C-STORE-RSP without a Status (what dimse/fastretrieve.py counted it as).
const PROCESSING_FAILURE: u16 = 0xC211;
const A_RELEASE_RQ: u8 = 0x05;

/// One sub-operation: the context it goes on and what its C-STORE-RQ names.
#[derive(Debug, Clone)]
pub struct Item {
    pub context_id: u8,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// Where the C-STOREs and the pending responses go.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    /// The association the C-STORE-RQs go on, its peer's maximum PDU length, and how long a
    /// write (of those, or of a pending response) may wait for a peer that stopped reading (None:
    /// for ever).
    pub store_fd: RawFd,
    pub store_max_pdu: usize,
    pub send_timeout: Option<Duration>,
    /// C-MOVE: (Move Originator AE, its C-MOVE-RQ's message id).
    pub originator: Option<(&'a str, u16)>,
    /// The pending responses: the requestor's association and its C-GET/C-MOVE request.
    pub rsp_fd: RawFd,
    pub rsp_context_id: u8,
    pub rsp_command_field: u16,
    pub rsp_sop_class_uid: &'a str,
    pub rsp_message_id: u16,
    pub rsp_max_pdu: usize,
    /// C-GET: the C-STOREs go on the requestor's association, each pending response written with
    /// the next request (`Progress::unsent`) rather than on its own.
    pub same_association: bool,
    /// The longest wait for one C-STORE-RSP before the caller is handed the wait.
    pub wait: Duration,
    /// A pending response is made once this much time has passed since the last one
    /// (`Progress::last_pending`); ZERO: after every sub-operation. PS3.4 C.4.2.3.1 and C.4.3.3.1
    /// leave pending responses optional: each costs the requestor a message to parse (and a
    /// C-MOVE a write to another socket), which for small objects is a fifth of the work.
    pub pending_interval: Duration,
}

/// What the batch changes: the last message id used, the counts, the pending response not yet
/// written (C-GET), when the last pending response was made.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub message_id: u16,
    pub counts: SubOperations,
    pub unsent: Vec<u8>,
    /// When the last pending response was made (None: none yet, the next one is due).
    pub last_pending: Option<Instant>,
}

/// Why a batch stopped at item `n` (the first of [`run`]'s result); the items before it were
/// sent, answered with Success and counted, their pending responses made.
#[derive(Debug)]
pub enum Stop {
    /// Every item was done.
    End,
    /// Item `n` could not be loaded: nothing was sent for it.
    Load(String),
    /// Item `n`'s C-STORE-RQ (`message_id`) could not be written.
    Send { message_id: u16, error: io::Error },
    /// Item `n` was sent and not concluded here: `status` is its C-STORE-RSP's if read (not a
    /// Success, or a Success read with something else); `outs` is what else its association
    /// delivered meanwhile (C-MOVE: only what ends the association), `closed` whether it closed
    /// (with what that cut short). C-MOVE, after a response: what the requestor's association
    /// delivered (`requestor_outs`, `requestor_closed`).
    Await {
        message_id: u16,
        status: Option<u16>,
        outs: Vec<Out>,
        closed: Option<Option<String>>,
        requestor_outs: Vec<Out>,
        requestor_closed: Option<Option<String>>,
    },
    /// C-MOVE: item `n` - 1's pending response could not be written to the requestor.
    Respond(io::Error),
}

/// An A-ABORT, an A-RELEASE-RQ or a protocol error: the association ends.
pub fn ends_association(out: &Out) -> bool {
    match out {
        Out::ProtocolError(_) => true,
        Out::Pdu(bytes) => matches!(bytes.first(), Some(&A_RELEASE_RQ | &A_ABORT)),
        _ => false,
    }
}

/// Runs `items` in order (see [`Stop`]): `load(i)` gives item i's data set, called on
/// `loaders` reader threads (item i on thread i mod `loaders`), each at most
/// `max(READ_AHEAD / loaders, 1)` items ahead of the sender; `conn` reads the association the
/// C-STOREs go on, `requestor` (C-MOVE) the requestor's, looked at without waiting after each
/// response. More than one loader is for loads one core cannot keep up with (the dense cold
/// codec's decode, ~250-380 MB/s a core against ~1,400 for the hot one); they still reach the
/// wire in order.
pub fn run<L, D>(
    route: &Route<'_>,
    conn: &mut Conn,
    requestor: Option<&mut Conn>,
    items: &[Item],
    load: L,
    loaders: usize,
    progress: &mut Progress,
) -> (usize, Stop)
where
    L: Fn(usize) -> Result<D, String> + Sync,
    D: AsRef<[u8]> + Send,
{
    if items.is_empty() {
        return (0, Stop::End);
    }
    let loaders = loaders.clamp(1, items.len());
    std::thread::scope(|s| {
        let load = &load;
        let mut queues = Vec::with_capacity(loaders);
        for first in 0..loaders {
            let (tx, rx) = mpsc::sync_channel((READ_AHEAD / loaders).max(1));
            queues.push(rx);
            s.spawn(move || {
                for i in (first..items.len()).step_by(loaders) {
                    let loaded = load(i);
                    let failed = loaded.is_err();
                    // a closed channel: the batch stopped, the rest is not wanted
                    if tx.send(loaded).is_err() || failed {
                        break;
                    }
                }
            });
        }
        // the queues are dropped when this returns, which ends a reader blocked on a full one
        send_all(route, conn, requestor, items, &queues, progress)
    })
}

fn send_all<D: AsRef<[u8]>>(
    route: &Route<'_>,
    conn: &mut Conn,
    mut requestor: Option<&mut Conn>,
    items: &[Item],
    loaded: &[mpsc::Receiver<Result<D, String>>],
    progress: &mut Progress,
) -> (usize, Stop) {
    for (i, item) in items.iter().enumerate() {
        let data = match loaded[i % loaded.len()].recv() {
            Ok(Ok(data)) => data,
            Ok(Err(why)) => return (i, Stop::Load(why)),
            Err(_) => return (i, Stop::Load("the reader stopped".into())),
        };
        progress.message_id = progress.message_id % 0xFFFF + 1;
        let message_id = progress.message_id;
        let command =
            encode_store_rq(&item.sop_class_uid, &item.sop_instance_uid, message_id, route.originator);
        let prefix = if route.same_association { std::mem::take(&mut progress.unsent) } else { Vec::new() };
        let framed = Framed::new(&prefix, item.context_id, &command, data.as_ref(), route.store_max_pdu);
        if let Err(error) = framed.send(route.store_fd, route.send_timeout) {
            progress.unsent = prefix; // not delivered: it goes with whatever is sent next
            return (i, Stop::Send { message_id, error });
        }
        drop(framed);
        drop(data); // its buffer back to the pool while the response is awaited
        let (status, outs, closed) = await_status(conn, message_id, route.wait, !route.same_association);
        if status != Some(SUCCESS) || !outs.is_empty() || closed.is_some() {
            let stop = Stop::Await {
                message_id,
                status,
                outs,
                closed,
                requestor_outs: Vec::new(),
                requestor_closed: None,
            };
            return (i, stop);
        }
        if let Some(req) = requestor.as_deref_mut() {
            let (requestor_outs, wait) = req.next(None, Duration::ZERO);
            let requestor_closed = match wait {
                Wait::Closed(reason) => Some(reason),
                _ => None,
            };
            if !requestor_outs.is_empty() || requestor_closed.is_some() {
                let stop = Stop::Await { message_id, status, outs, closed, requestor_outs, requestor_closed };
                return (i, stop);
            }
        }
        let counts = &mut progress.counts;
        counts.remaining = counts.remaining.saturating_sub(1);
        counts.completed += 1;
        // a pending response once `pending_interval` has passed (ZERO: after every sub-operation,
        // the last one too, as pynetdicom and dcmtk do)
        let now = Instant::now();
        if progress.last_pending.is_some_and(|t| now.duration_since(t) < route.pending_interval) {
            continue;
        }
        progress.last_pending = Some(now);
        let pending = encode_retrieve_pending(
            route.rsp_command_field,
            route.rsp_sop_class_uid,
            route.rsp_message_id,
            counts,
        );
        let pdus = message_pdus(route.rsp_context_id, &pending, None, route.rsp_max_pdu);
        if route.same_association {
            progress.unsent.extend_from_slice(&pdus);
        } else if let Err(error) = write_all(route.rsp_fd, &mut [IoSlice::new(&pdus)], route.send_timeout) {
            return (i + 1, Stop::Respond(error));
        }
    }
    (items.len(), Stop::End)
}

/// The status of the C-STORE-RSP to `message_id`, waiting at most `wait`, with what else arrived
/// (`destination`: only what ends the association; the rest is of no interest on a
/// sub-association) and whether the association closed.
fn await_status(
    conn: &mut Conn,
    message_id: u16,
    wait: Duration,
    destination: bool,
) -> (Option<u16>, Vec<Out>, Option<Option<String>>) {
    let deadline = Instant::now() + wait;
    let mut status = None;
    let mut others = Vec::new();
    loop {
        let (outs, state) = conn.next(None, deadline.saturating_duration_since(Instant::now()));
        for out in outs {
            match out {
                Out::Message { ref command, .. }
                    if command.command_field == C_STORE_RSP
                        && command.message_id_being_responded_to == message_id =>
                {
                    status = Some(command.status.unwrap_or(PROCESSING_FAILURE));
                }
                other => {
                    if !destination || ends_association(&other) {
                        others.push(other);
                    }
                }
            }
        }
        if let Wait::Closed(reason) = state {
            return (status, others, Some(reason));
        }
        if status.is_some() || !others.is_empty() || Instant::now() >= deadline {
            return (status, others, None);
        }
    }
}
