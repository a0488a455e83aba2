//! The C-STORE sub-operations of a C-GET or C-MOVE, a batch at a time, with no Python per object
//! (dimse/fastretrieve.py drives it).
//!
//! Why: with the objects read, framed and sent natively, what was left per sub-operation of a
//! retrieve was Python: the read-ahead's hand-off of each object between two threads (and the GIL
//! between them), the C-STORE-RQ and pending response packed by `struct`, the response read
//! through a Python loop. On 2 cores that was a fifth of a C-GET's server CPU (perf, 300-slice CT).
//! Here one call runs a batch: this thread writes each C-STORE-RQ with its data set, reads its
//! C-STORE-RSP and makes the pending response; the objects are read and decoded either by this
//! thread, the next one while the peer receives the current one and answers (large objects), or
//! by a reader thread a few ahead (small ones; see [`INLINE_MIN`]). Anything but a plain Success
//! with nothing else read stops the batch and goes back to the caller, which acts on it exactly
//! as it did before (warnings, failures, a C-CANCEL, an association that ends, a response slower
//! than `wait`), so the PS3.4 semantics stay in one place.
//!
//! Why large objects are decoded inline: with the reader thread, on 2 cores, the reader, the
//! sending thread and the peer were three busy threads; the reader was preempted by the other
//! two's wake-ups and then queued ~0.4 ms for a core (perf sched), and the sender waited for the
//! next CT slice on most sub-operations (median 0.19-0.33 ms of a 0.46-0.53 ms object; timeline
//! in bench/RESULTS.md, "C-GET per-object loop"). Inline, the decode fills the wait for the
//! response on the thread that sends: no hand-off, and the response is there when it is read.
//! It is not faster on those 2 cores (the decode is on the critical path either way), it costs
//! less CPU.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::assembler::Out;
use super::command::{encode_retrieve_pending, encode_store_rq, SubOperations, C_STORE_RSP};
use super::conn::{Conn, Wait};
use super::pdu::{message_pdus, A_ABORT};
use super::send::{write_all, Framed};

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

/// Objects from this size (the batch's first object's data set) are decoded by the sending
/// thread between a write and its response; smaller ones by a reader thread, [`READ_AHEAD`]
/// ahead. Measured on 2 cores against getscu (bench/RESULTS.md, "C-GET per-object loop"): for a
/// 512 KiB CT slice (~0.32 ms to decode, longer than the peer's turnaround) inline gave the same
/// objects per second as the reader thread (paired rounds, median ratio 1.00-1.02) for 10-20 %
/// less server CPU (no hand-off, no wake-up per object); for a 100 KB CR object (~0.12 ms, which
/// the reader hides behind the peer's turnaround and the sending thread cannot) it was 0.87x.
pub const INLINE_MIN: usize = 256 << 10;
/// Objects loaded ahead of the one being sent by a reader thread (readahead.py's depth).
pub const READ_AHEAD: usize = 4;

/// Where each object comes from: loaded by the sending thread, the next one while the current
/// one is answered, or by a reader thread.
enum Objects<D, L> {
    Inline { load: L, next: Option<Result<D, String>> },
    Ahead { first: Option<Result<D, String>>, rx: mpsc::Receiver<Result<D, String>> },
}

impl<D, L: FnMut(usize) -> Result<D, String>> Objects<D, L> {
    fn take(&mut self, i: usize) -> Result<D, String> {
        match self {
            Objects::Inline { load, next } => next.take().unwrap_or_else(|| load(i)),
            Objects::Ahead { first, rx } => {
                first.take().unwrap_or_else(|| rx.recv().unwrap_or_else(|_| Err("the reader stopped".into())))
            }
        }
    }

    /// Item `i` is written and its response not read yet.
    fn sent(&mut self, i: usize, count: usize) {
        if let Objects::Inline { load, next } = self {
            if i + 1 < count {
                *next = Some(load(i + 1));
            }
        }
    }
}

/// Runs `items` in order (see [`Stop`]): `load(i)` gives item i's data set: item 0 on this
/// thread, then (see [`INLINE_MIN`]) item i + 1 here once item i is written, before its
/// response is read (a batch that stops at item i has loaded item i + 1 for nothing), or on a
/// reader thread at most [`READ_AHEAD`] items ahead. `conn` reads the association the C-STOREs
/// go on, `requestor` (C-MOVE) the requestor's, looked at without waiting after each response.
pub fn run<L, D>(
    route: &Route<'_>,
    conn: &mut Conn,
    requestor: Option<&mut Conn>,
    items: &[Item],
    load: L,
    progress: &mut Progress,
) -> (usize, Stop)
where
    L: Fn(usize) -> Result<D, String> + Sync,
    D: AsRef<[u8]> + Send,
{
    if items.is_empty() {
        return (0, Stop::End);
    }
    let first = load(0);
    let large = match &first {
        Ok(data) => data.as_ref().len() >= INLINE_MIN,
        Err(_) => true, // nothing more to load: the batch stops there
    };
    if items.len() == 1 || large {
        let objects = Objects::Inline { load, next: Some(first) };
        return send_all(route, conn, requestor, items, objects, progress);
    }
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        let load = &load;
        s.spawn(move || {
            for i in 1..items.len() {
                let loaded = load(i);
                let failed = loaded.is_err();
                // a closed channel: the batch stopped, the rest is not wanted
                if tx.send(loaded).is_err() || failed {
                    break;
                }
            }
        });
        // `rx` is dropped when this returns, which ends a reader blocked on a full channel
        let objects = Objects::<D, &L>::Ahead { first: Some(first), rx };
        send_all(route, conn, requestor, items, objects, progress)
    })
}

fn send_all<D: AsRef<[u8]>, L: FnMut(usize) -> Result<D, String>>(
    route: &Route<'_>,
    conn: &mut Conn,
    mut requestor: Option<&mut Conn>,
    items: &[Item],
    mut objects: Objects<D, L>,
    progress: &mut Progress,
) -> (usize, Stop) {
    for (i, item) in items.iter().enumerate() {
        let data = match objects.take(i) {
            Ok(data) => data,
            Err(why) => return (i, Stop::Load(why)),
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
        let deadline = Instant::now() + route.wait;
        drop(framed);
        drop(data); // its buffer back to the pool, for the next object
        objects.sent(i, items.len());
        let (status, outs, closed) = await_status(conn, message_id, deadline, !route.same_association);
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

/// The status of the C-STORE-RSP to `message_id`, waiting until `deadline`, with what else arrived
/// (`destination`: only what ends the association; the rest is of no interest on a
/// sub-association) and whether the association closed.
fn await_status(
    conn: &mut Conn,
    message_id: u16,
    deadline: Instant,
    destination: bool,
) -> (Option<u16>, Vec<Out>, Option<Option<String>>) {
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
