//! DIMSE command sets (PS3.7 §6.3, §9.3, §E): always Implicit VR Little Endian, group 0000 only.

/// Command Field values (PS3.7 §E.1).
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_CANCEL_RQ: u16 = 0x0FFF;
/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

const AFFECTED_SOP_CLASS_UID: u32 = 0x0000_0002;
const COMMAND_FIELD: u32 = 0x0000_0100;
const MESSAGE_ID: u32 = 0x0000_0110;
const MESSAGE_ID_BEING_RESPONDED_TO: u32 = 0x0000_0120;
const PRIORITY: u32 = 0x0000_0700;
const COMMAND_DATA_SET_TYPE: u32 = 0x0000_0800;
const STATUS: u32 = 0x0000_0900;
const ERROR_COMMENT: u32 = 0x0000_0902;
const AFFECTED_SOP_INSTANCE_UID: u32 = 0x0000_1000;
const MOVE_DESTINATION: u32 = 0x0000_0600;
const MOVE_ORIGINATOR_AE: u32 = 0x0000_1030;
const MOVE_ORIGINATOR_MESSAGE_ID: u32 = 0x0000_1031;
/// PS3.5 Table 6.2-1: LO holds at most 64 characters.
const LO_MAX: usize = 64;

/// The fields of a request command set the archive acts on directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    /// C-CANCEL-RQ: the request it cancels.
    pub message_id_being_responded_to: u16,
    pub priority: u16,
    pub data_set_type: u16,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub move_originator_ae: String,
    pub move_originator_message_id: Option<u16>,
    /// C-MOVE-RQ: the AE title the sub-operations go to.
    pub move_destination: String,
    /// Responses: the Status.
    pub status: Option<u16>,
    /// Any element beyond the fields above (Error Comment, Offending Element, counts, ...).
    pub has_other_elements: bool,
}

impl Command {
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }

    /// A response that says nothing but Success (what a fast path may answer for pynetdicom).
    pub fn is_plain_success(&self) -> bool {
        self.command_field & 0x8000 != 0 && self.status == Some(0) && !self.has_other_elements
    }
}

fn text(value: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(value).map_err(|_| "command element is not ASCII".to_string())?;
    Ok(s.trim_end_matches(['\0', ' ']).trim_start_matches(' ').to_string())
}

fn us(tag: u32, value: &[u8]) -> Result<u16, String> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(format!("({:04X},{:04X}) US of length {}", tag >> 16, tag & 0xFFFF, value.len())),
    }
}

/// Decodes a command set. Unknown group-0000 elements are skipped; anything outside group 0000,
/// a length overrun or a missing Command Field is an error (the caller hands such a message to
/// pynetdicom, which reports it the standard way).
pub fn decode(bytes: &[u8]) -> Result<Command, String> {
    let mut cmd = Command::default();
    let mut seen_field = false;
    let mut at = 0;
    while at < bytes.len() {
        if bytes.len() - at < 8 {
            return Err(format!("command set: {} trailing bytes", bytes.len() - at));
        }
        let group = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let elem = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        if group != 0 {
            return Err(format!("command set holds ({group:04X},{elem:04X}) outside group 0000"));
        }
        if len > bytes.len() - at - 8 {
            return Err(format!("command element (0000,{elem:04X}) length {len} overruns the set"));
        }
        let tag = u32::from(elem);
        let value = &bytes[at + 8..at + 8 + len];
        match tag {
            AFFECTED_SOP_CLASS_UID => cmd.sop_class_uid = text(value)?,
            COMMAND_FIELD => {
                cmd.command_field = us(tag, value)?;
                seen_field = true;
            }
            MESSAGE_ID => cmd.message_id = us(tag, value)?,
            MESSAGE_ID_BEING_RESPONDED_TO => cmd.message_id_being_responded_to = us(tag, value)?,
            PRIORITY => cmd.priority = us(tag, value)?,
            COMMAND_DATA_SET_TYPE => cmd.data_set_type = us(tag, value)?,
            AFFECTED_SOP_INSTANCE_UID => cmd.sop_instance_uid = text(value)?,
            MOVE_ORIGINATOR_AE => cmd.move_originator_ae = text(value)?,
            MOVE_DESTINATION => cmd.move_destination = text(value)?,
            MOVE_ORIGINATOR_MESSAGE_ID => cmd.move_originator_message_id = Some(us(tag, value)?),
            STATUS => cmd.status = Some(us(tag, value)?),
            0 => {} // Command Group Length
            _ => cmd.has_other_elements = true,
        }
        at += 8 + len;
    }
    if !seen_field {
        return Err("command set without a Command Field (0000,0100)".into());
    }
    Ok(cmd)
}

/// What a response command set says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFields<'a> {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub sop_class_uid: &'a str,
    /// Left out when empty (C-ECHO-RSP carries none).
    pub sop_instance_uid: &'a str,
    pub status: u16,
    /// Left out when empty; cut to LO's 64 characters.
    pub error_comment: &'a str,
}

fn push_element(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn padded(s: &str, pad: u8) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    v
}

/// A response command set, elements in tag order after the Command Group Length, exactly as
/// pynetdicom encodes the same response (checked by the Python tests).
pub fn encode_response(r: &ResponseFields<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    push_element(&mut body, AFFECTED_SOP_CLASS_UID, &padded(r.sop_class_uid, 0));
    push_element(&mut body, COMMAND_FIELD, &r.command_field.to_le_bytes());
    push_element(&mut body, MESSAGE_ID_BEING_RESPONDED_TO, &r.message_id_being_responded_to.to_le_bytes());
    push_element(&mut body, COMMAND_DATA_SET_TYPE, &NO_DATA_SET.to_le_bytes());
    push_element(&mut body, STATUS, &r.status.to_le_bytes());
    if !r.error_comment.is_empty() {
        let comment: String = r.error_comment.chars().filter(char::is_ascii).take(LO_MAX).collect();
        push_element(&mut body, ERROR_COMMENT, &padded(comment.trim_end(), b' '));
    }
    if !r.sop_instance_uid.is_empty() {
        push_element(&mut body, AFFECTED_SOP_INSTANCE_UID, &padded(r.sop_instance_uid, 0));
    }
    with_group_length(&body)
}

/// Command Data Set Type: a data set follows (any value but 0x0101; pynetdicom writes 0x0001).
pub const DATA_SET_PRESENT: u16 = 0x0001;
/// Status Pending (PS3.4 C.4.2.1.5, C.4.3.1.4): a retrieve's sub-operations go on.
pub const PENDING: u16 = 0xFF00;
const NUMBER_OF_REMAINING: u32 = 0x0000_1020;
const NUMBER_OF_COMPLETED: u32 = 0x0000_1021;
const NUMBER_OF_FAILED: u32 = 0x0000_1022;
const NUMBER_OF_WARNING: u32 = 0x0000_1023;

fn with_group_length(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    push_element(&mut out, 0, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// AE values are padded with a space, as UIs are with NUL.
fn ae(value: &str) -> Vec<u8> {
    padded(value.trim(), b' ')
}

/// A C-STORE-RQ command set with a data set, medium priority, as pynetdicom encodes it (and
/// dimse/fastretrieve.store_rq); a C-MOVE sub-operation names its Move Originator AE and message.
pub fn encode_store_rq(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    message_id: u16,
    originator: Option<(&str, u16)>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(192);
    push_element(&mut body, AFFECTED_SOP_CLASS_UID, &padded(sop_class_uid, 0));
    push_element(&mut body, COMMAND_FIELD, &C_STORE_RQ.to_le_bytes());
    push_element(&mut body, MESSAGE_ID, &message_id.to_le_bytes());
    push_element(&mut body, PRIORITY, &0u16.to_le_bytes());
    push_element(&mut body, COMMAND_DATA_SET_TYPE, &DATA_SET_PRESENT.to_le_bytes());
    push_element(&mut body, AFFECTED_SOP_INSTANCE_UID, &padded(sop_instance_uid, 0));
    if let Some((ae_title, id)) = originator {
        push_element(&mut body, MOVE_ORIGINATOR_AE, &ae(ae_title));
        push_element(&mut body, MOVE_ORIGINATOR_MESSAGE_ID, &id.to_le_bytes());
    }
    with_group_length(&body)
}

/// The sub-operation counts of a C-GET-RSP or C-MOVE-RSP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: u32,
    pub completed: u32,
    pub failed: u32,
    pub warning: u32,
}

/// A pending C-GET-RSP or C-MOVE-RSP (PS3.7 9.3.3.2, 9.3.4.2) without a data set, its counts
/// capped at what a US holds, as dimse/fastretrieve.retrieve_rsp encodes it.
pub fn encode_retrieve_pending(
    command_field: u16,
    sop_class_uid: &str,
    message_id: u16,
    counts: &SubOperations,
) -> Vec<u8> {
    let us = |n: u32| (n.min(u32::from(u16::MAX)) as u16).to_le_bytes();
    let mut body = Vec::with_capacity(160);
    push_element(&mut body, AFFECTED_SOP_CLASS_UID, &padded(sop_class_uid, 0));
    push_element(&mut body, COMMAND_FIELD, &command_field.to_le_bytes());
    push_element(&mut body, MESSAGE_ID_BEING_RESPONDED_TO, &message_id.to_le_bytes());
    push_element(&mut body, COMMAND_DATA_SET_TYPE, &NO_DATA_SET.to_le_bytes());
    push_element(&mut body, STATUS, &PENDING.to_le_bytes());
    push_element(&mut body, NUMBER_OF_REMAINING, &us(counts.remaining));
    push_element(&mut body, NUMBER_OF_COMPLETED, &us(counts.completed));
    push_element(&mut body, NUMBER_OF_FAILED, &us(counts.failed));
    push_element(&mut body, NUMBER_OF_WARNING, &us(counts.warning));
    with_group_length(&body)
}
