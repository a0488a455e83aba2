//! P-DATA reassembly: complete fast messages out, everything else re-framed for pynetdicom.

use std::collections::{HashMap, HashSet};

use super::command::{self, Command};
use super::pdu::{self, Pdv};
use crate::object::ReceivedDataSet;

/// The one message whose data set [`Assembler::with_max_data_set`] bounds.
const C_STORE_RQ: u16 = 0x0001;

/// Most room a C-STORE data set starts with (the previous one's length, at most this).
const ROOM_HINT_MAX: usize = 64 << 20;

/// What one PDU (or a run of PDUs) produced, in arrival order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// A whole PDU for pynetdicom: a non-P-DATA PDU as received, or a P-DATA-TF PDU holding the
    /// PDVs of messages the archive does not answer itself.
    Pdu(Vec<u8>),
    /// A complete fast message: its command and, if it has one, its data set.
    Message { context_id: u8, command: Command, data_set: Option<ReceivedDataSet> },
    /// A fast C-STORE-RQ whose data set grew past the limit ([`Assembler::with_max_data_set`]):
    /// its fragments were counted and dropped, so the caller refuses it without ever holding it.
    Oversize { context_id: u8, command: Command, received: usize },
    /// The association must be aborted: the peer broke the P-DATA rules.
    ProtocolError(String),
}

#[derive(Debug)]
enum State {
    /// Between messages: the next PDV starts a command set.
    Idle,
    /// Command fragments received so far (a command set may span PDVs and PDUs).
    Command { context_id: u8, bytes: Vec<u8> },
    /// A fast message's data set, being gathered.
    Data { context_id: u8, command: Command, bytes: ReceivedDataSet },
    /// An oversize C-STORE data set: its fragments are counted, not kept, until its last one.
    Discard { context_id: u8, command: Command, received: usize },
    /// The data set of a message for pynetdicom, still coming.
    Pass,
    /// After a protocol error nothing more is interpreted.
    Broken,
}

/// Per-association reassembly state.
#[derive(Debug)]
pub struct Assembler {
    /// context id -> the Command Fields answered directly on that context.
    fast: HashMap<u8, Vec<u16>>,
    /// Contexts whose fast responses come out whatever their status (the caller interprets
    /// failures and warnings itself: the sub-operations of a C-GET it runs).
    any_status: HashSet<u8>,
    /// Largest C-STORE data set gathered (0 = no limit); see [`Out::Oversize`].
    max_data_set: usize,
    /// Length of the last C-STORE data set gathered: the room the next one starts with (a
    /// modality sends a series of like objects).
    last_len: usize,
    state: State,
}

impl Assembler {
    pub fn new(fast: HashMap<u8, Vec<u16>>) -> Self {
        Assembler { fast, any_status: HashSet::new(), max_data_set: 0, last_len: 0, state: State::Idle }
    }

    /// C-STORE data sets longer than `limit` bytes (0 = no limit) are dropped as they arrive and
    /// reported as [`Out::Oversize`] once their last fragment is in.
    pub fn with_max_data_set(mut self, limit: usize) -> Self {
        self.max_data_set = limit;
        self
    }

    /// Responses named fast on these contexts come out with any status, not only plain Success.
    pub fn with_any_status(mut self, contexts: impl IntoIterator<Item = u8>) -> Self {
        self.any_status = contexts.into_iter().collect();
        self
    }

    /// Feeds one whole PDU (header included) and appends what it completes to `out`.
    pub fn feed(&mut self, pdu_bytes: &[u8], out: &mut Vec<Out>) {
        if matches!(self.state, State::Broken) {
            return;
        }
        if pdu_bytes[0] != pdu::P_DATA_TF {
            out.push(Out::Pdu(pdu_bytes.to_vec()));
            return;
        }
        let pdvs = match pdu::pdvs(&pdu_bytes[pdu::HEADER_LEN..]) {
            Ok(p) => p,
            Err(why) => return self.fail(why, out),
        };
        // PDVs for pynetdicom, re-framed into one PDU (flushed before any fast message that
        // completes later in the same PDU, so the order of events is the peer's order).
        let mut pass: Vec<(u8, u8, &[u8])> = Vec::new();
        for pdv in pdvs {
            if let Err(why) = self.pdv(pdv, &mut pass, out) {
                return self.fail(why, out);
            }
        }
        if !pass.is_empty() {
            let mut framed = Vec::new();
            pdu::push_pdata(&mut framed, &pass);
            out.push(Out::Pdu(framed));
        }
    }

    fn fail(&mut self, why: String, out: &mut Vec<Out>) {
        self.state = State::Broken;
        out.push(Out::ProtocolError(why));
    }

    fn pdv<'a>(
        &mut self,
        pdv: Pdv<'a>,
        pass: &mut Vec<(u8, u8, &'a [u8])>,
        out: &mut Vec<Out>,
    ) -> Result<(), String> {
        match &mut self.state {
            State::Broken => Ok(()),
            State::Idle | State::Command { .. } => {
                if !pdv.is_command() {
                    return Err(format!(
                        "data set fragment on context {} where a command set must start",
                        pdv.context_id
                    ));
                }
                let bytes = match std::mem::replace(&mut self.state, State::Idle) {
                    State::Command { context_id, mut bytes } => {
                        if context_id != pdv.context_id {
                            return Err(format!(
                                "command fragments on contexts {context_id} and {}",
                                pdv.context_id
                            ));
                        }
                        bytes.extend_from_slice(pdv.fragment);
                        bytes
                    }
                    _ => pdv.fragment.to_vec(),
                };
                if !pdv.is_last() {
                    self.state = State::Command { context_id: pdv.context_id, bytes };
                    return Ok(());
                }
                self.command_complete(pdv, bytes, pass, out);
                Ok(())
            }
            State::Data { context_id, bytes, command } => {
                if pdv.is_command() || pdv.context_id != *context_id {
                    return Err(format!(
                        "expected a data set fragment on context {context_id}, got a {} fragment on {}",
                        if pdv.is_command() { "command" } else { "data set" },
                        pdv.context_id
                    ));
                }
                if self.max_data_set > 0
                    && command.command_field == C_STORE_RQ
                    && bytes.len() + pdv.fragment.len() > self.max_data_set
                {
                    // From here on only counted: the peer's remaining fragments are read and
                    // dropped, so the association survives and the refusal is a status.
                    if let State::Data { context_id, command, bytes } =
                        std::mem::replace(&mut self.state, State::Idle)
                    {
                        let received = bytes.len() + pdv.fragment.len();
                        self.state = State::Discard { context_id, command, received };
                    }
                    self.discarded_last(pdv.is_last(), pass, out);
                    return Ok(());
                }
                bytes.extend(pdv.fragment);
                if pdv.is_last() {
                    flush(pass, out);
                    self.data_set_complete(out);
                }
                Ok(())
            }
            State::Discard { context_id, received, .. } => {
                if pdv.is_command() || pdv.context_id != *context_id {
                    return Err(format!(
                        "expected a data set fragment on context {context_id}, got a {} fragment on {}",
                        if pdv.is_command() { "command" } else { "data set" },
                        pdv.context_id
                    ));
                }
                *received += pdv.fragment.len();
                self.discarded_last(pdv.is_last(), pass, out);
                Ok(())
            }
            State::Pass => {
                pass.push((pdv.context_id, pdv.control, pdv.fragment));
                if !pdv.is_command() && pdv.is_last() {
                    self.state = State::Idle;
                }
                Ok(())
            }
        }
    }

    /// In `State::Data`, after its last fragment: the message comes out.
    fn data_set_complete(&mut self, out: &mut Vec<Out>) {
        if let State::Data { context_id, command, bytes } = std::mem::replace(&mut self.state, State::Idle) {
            if command.command_field == C_STORE_RQ {
                self.last_len = bytes.len();
            }
            out.push(Out::Message { context_id, command, data_set: Some(bytes) });
        }
    }

    /// The data set a fast message is gathering on `context_id`, if a fragment of `len` more
    /// bytes may go straight into it (within the size limit): the reader then receives the
    /// fragment there itself instead of through [`Self::feed`], and calls
    /// [`Self::fragment_received`] once it is all in.
    pub fn receiving_into(&mut self, context_id: u8, len: usize) -> Option<&mut ReceivedDataSet> {
        match &mut self.state {
            State::Data { context_id: c, command, bytes } if *c == context_id => {
                let over = self.max_data_set > 0
                    && command.command_field == C_STORE_RQ
                    && bytes.len() + len > self.max_data_set;
                (!over).then_some(bytes)
            }
            _ => None,
        }
    }

    /// The data set [`Self::receiving_into`] handed out, while its fragment is coming in.
    pub fn receiving_into_current(&mut self) -> Option<&mut ReceivedDataSet> {
        match &mut self.state {
            State::Data { bytes, .. } => Some(bytes),
            _ => None,
        }
    }

    /// The fragment [`Self::receiving_into`] took is all in; `last`: its PDV ended the data set.
    pub fn fragment_received(&mut self, last: bool, out: &mut Vec<Out>) {
        if last {
            self.data_set_complete(out);
        }
    }

    /// In `State::Discard`: after the last fragment, the oversize message comes out.
    fn discarded_last(&mut self, last: bool, pass: &mut Vec<(u8, u8, &[u8])>, out: &mut Vec<Out>) {
        if !last {
            return;
        }
        if let State::Discard { context_id, command, received } =
            std::mem::replace(&mut self.state, State::Idle)
        {
            flush(pass, out);
            out.push(Out::Oversize { context_id, command, received });
        }
    }

    /// A whole command set arrived in `bytes`, its last fragment being `last`.
    fn command_complete<'a>(
        &mut self,
        last: Pdv<'a>,
        bytes: Vec<u8>,
        pass: &mut Vec<(u8, u8, &'a [u8])>,
        out: &mut Vec<Out>,
    ) {
        let context_id = last.context_id;
        let decoded = command::decode(&bytes);
        // Requests named fast are answered by the caller; responses only when they are a plain
        // Success (anything else, with its comment or counts, is pynetdicom's to interpret),
        // unless the context takes any status.
        let fast = matches!(&decoded,
            Ok(c) if self.fast.get(&context_id).is_some_and(|fields| fields.contains(&c.command_field))
                && (c.command_field & 0x8000 == 0 || c.is_plain_success()
                    || self.any_status.contains(&context_id)));
        match decoded {
            Ok(command) if fast => {
                if command.has_data_set() {
                    // A C-STORE starts with room for the association's previous one, at most
                    // ROOM_HINT_MAX (an odd 2 GB multi-frame must not size every later buffer).
                    let room = if command.command_field == C_STORE_RQ {
                        self.last_len.min(ROOM_HINT_MAX)
                    } else {
                        0
                    };
                    self.state =
                        State::Data { context_id, command, bytes: ReceivedDataSet::with_capacity(room) };
                } else {
                    flush(pass, out);
                    out.push(Out::Message { context_id, command, data_set: None });
                }
            }
            other => {
                // pynetdicom's message, with its data set unless the command says none. An
                // undecodable command is pynetdicom's to report; what follows it goes there too
                // until a data set ends (the message boundary is unknown).
                let data_set = !matches!(other, Ok(c) if !c.has_data_set());
                self.state = if data_set { State::Pass } else { State::Idle };
                if bytes.len() == last.fragment.len() {
                    pass.push((context_id, last.control, last.fragment));
                } else {
                    // Fragments held from earlier PDVs: pass the whole command as one PDV.
                    flush(pass, out);
                    let mut framed = Vec::new();
                    pdu::push_pdata(&mut framed, &[(context_id, last.control, &bytes)]);
                    out.push(Out::Pdu(framed));
                }
            }
        }
    }
}

fn flush(pass: &mut Vec<(u8, u8, &[u8])>, out: &mut Vec<Out>) {
    if !pass.is_empty() {
        let mut framed = Vec::new();
        pdu::push_pdata(&mut framed, pass);
        out.push(Out::Pdu(framed));
        pass.clear();
    }
}
