//! PDU and PDV framing (PS3.8 §9.3.1 and §9.3.5).

/// PDU types (PS3.8 Table 9-11).
pub const P_DATA_TF: u8 = 0x04;
pub const A_ABORT: u8 = 0x07;
/// Every PDU starts with type, reserved byte, and a big-endian u32 length of what follows.
pub const HEADER_LEN: usize = 6;
/// PDV item header: u32 length (covering the next two bytes and the fragment), context id,
/// message control header.
pub const PDV_HEADER_LEN: usize = 6;

/// Message control header bits (PS3.8 Annex E.2).
pub const MCH_COMMAND: u8 = 0x01;
pub const MCH_LAST: u8 = 0x02;

/// One presentation data value inside a P-DATA-TF PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdv<'a> {
    pub context_id: u8,
    pub control: u8,
    pub fragment: &'a [u8],
}

impl Pdv<'_> {
    pub fn is_command(&self) -> bool {
        self.control & MCH_COMMAND != 0
    }
    pub fn is_last(&self) -> bool {
        self.control & MCH_LAST != 0
    }
}

/// The PDVs of a P-DATA-TF PDU body (the bytes after the 6-byte PDU header).
pub fn pdvs(body: &[u8]) -> Result<Vec<Pdv<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        if body.len() - at < PDV_HEADER_LEN {
            return Err(format!("P-DATA-TF: {} trailing bytes, too short for a PDV item", body.len() - at));
        }
        let len = u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize;
        if len < 2 || len > body.len() - at - 4 {
            return Err(format!("P-DATA-TF: PDV item length {len} at offset {at} overruns the PDU"));
        }
        out.push(Pdv {
            context_id: body[at + 4],
            control: body[at + 5],
            fragment: &body[at + 6..at + 4 + len],
        });
        at += 4 + len;
    }
    if out.is_empty() {
        return Err("P-DATA-TF PDU without a PDV item".into());
    }
    Ok(out)
}

/// Appends one P-DATA-TF PDU holding `pdvs` to `out`.
pub fn push_pdata(out: &mut Vec<u8>, pdvs: &[(u8, u8, &[u8])]) {
    let body: usize = pdvs.iter().map(|(_, _, f)| PDV_HEADER_LEN + f.len()).sum();
    out.reserve(HEADER_LEN + body);
    out.extend_from_slice(&[P_DATA_TF, 0]);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    for (ctx, control, fragment) in pdvs {
        out.extend_from_slice(&((fragment.len() + 2) as u32).to_be_bytes());
        out.push(*ctx);
        out.push(*control);
        out.extend_from_slice(fragment);
    }
}

/// The P-DATA-TF PDUs of one DIMSE message: the command set and, if given, its data set, in one
/// PDU when both fit the peer's maximum length (`max_pdu` = its Maximum Length Received, 0 =
/// unlimited), else split so that no PDU exceeds it.
pub fn message_pdus(context_id: u8, command: &[u8], data_set: Option<&[u8]>, max_pdu: usize) -> Vec<u8> {
    let data_len = data_set.map_or(0, |d| d.len() + PDV_HEADER_LEN);
    let mut out = Vec::with_capacity(command.len() + data_len + 32);
    push_message_pdus(&mut out, context_id, command, data_set, max_pdu);
    out
}

/// [`message_pdus`], appended to `out` (a batch of messages framed into one buffer).
pub fn push_message_pdus(
    out: &mut Vec<u8>,
    context_id: u8,
    command: &[u8],
    data_set: Option<&[u8]>,
    max_pdu: usize,
) {
    // The peer's limit counts the PDU body (PDV items), not the 6-byte PDU header.
    let limit = if max_pdu == 0 { usize::MAX } else { max_pdu };
    let data_len = data_set.map_or(0, |d| d.len() + PDV_HEADER_LEN);
    if let Some(data) = data_set.filter(|_| command.len() + PDV_HEADER_LEN + data_len <= limit) {
        push_pdata(out, &[(context_id, MCH_COMMAND | MCH_LAST, command), (context_id, MCH_LAST, data)]);
        return;
    }
    let room = limit.saturating_sub(PDV_HEADER_LEN).max(1);
    for (bytes, kind) in [(Some(command), MCH_COMMAND), (data_set, 0)] {
        let Some(bytes) = bytes else { continue };
        let mut chunks = bytes.chunks(room).peekable();
        if chunks.peek().is_none() {
            push_pdata(out, &[(context_id, kind | MCH_LAST, &[])]);
        }
        while let Some(chunk) = chunks.next() {
            let control = kind | if chunks.peek().is_none() { MCH_LAST } else { 0 };
            push_pdata(out, &[(context_id, control, chunk)]);
        }
    }
}
