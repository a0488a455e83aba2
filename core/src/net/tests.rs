use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::command::{self, C_CANCEL_RQ as C_CANCEL, C_ECHO_RQ, C_STORE_RQ, NO_DATA_SET};
use super::pdu::{self, MCH_COMMAND, MCH_LAST};
use super::*;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

fn element(out: &mut Vec<u8>, elem: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn request(field: u16, msg_id: u16, sop_class: &str, sop_uid: &str, data_set: bool) -> Vec<u8> {
    let pad = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    };
    let mut body = Vec::new();
    element(&mut body, 0x0002, &pad(sop_class));
    element(&mut body, 0x0100, &field.to_le_bytes());
    element(&mut body, 0x0110, &msg_id.to_le_bytes());
    element(&mut body, 0x0700, &0u16.to_le_bytes());
    element(&mut body, 0x0800, &(if data_set { 0u16 } else { NO_DATA_SET }).to_le_bytes());
    if !sop_uid.is_empty() {
        element(&mut body, 0x1000, &pad(sop_uid));
    }
    let mut out = Vec::new();
    element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn pdata(pdvs: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    pdu::push_pdata(&mut out, pdvs);
    out
}

fn fast() -> Assembler {
    Assembler::new(HashMap::from([(1, vec![C_STORE_RQ]), (3, vec![C_ECHO_RQ])]))
}

#[test]
fn command_round_trip_and_response_layout() {
    let cmd = command::decode(&request(C_STORE_RQ, 7, CT, "1.2.3.4", true)).unwrap();
    assert_eq!(cmd.command_field, C_STORE_RQ);
    assert_eq!(cmd.message_id, 7);
    assert_eq!(cmd.sop_class_uid, CT);
    assert_eq!(cmd.sop_instance_uid, "1.2.3.4");
    assert!(cmd.has_data_set());

    let rsp = encode_response(&ResponseFields {
        command_field: 0x8001,
        message_id_being_responded_to: 7,
        sop_class_uid: CT,
        sop_instance_uid: "1.2.3",
        status: 0xA700,
        error_comment: "disk full",
    });
    let back = command::decode(&rsp).unwrap();
    assert_eq!((back.command_field, back.sop_instance_uid.as_str()), (0x8001, "1.2.3"));
    // group length covers exactly what follows it
    let gl = u32::from_le_bytes(rsp[8..12].try_into().unwrap()) as usize;
    assert_eq!(gl, rsp.len() - 12);
    // every value has even length
    let mut at = 12;
    while at < rsp.len() {
        let len = u32::from_le_bytes(rsp[at + 4..at + 8].try_into().unwrap()) as usize;
        assert_eq!(len % 2, 0, "odd length at {at}");
        at += 8 + len;
    }
    assert!(command::decode(&rsp[..rsp.len() - 1]).is_err());
    assert!(command::decode(&[0x08, 0, 0x18, 0, 0, 0, 0, 0]).is_err(), "outside group 0000");
}

#[test]
fn long_comment_is_cut_to_lo() {
    let long = "x".repeat(200);
    let rsp = encode_response(&ResponseFields {
        command_field: 0x8001,
        error_comment: &long,
        ..Default::default()
    });
    let needle = [0u8, 0, 0x02, 0x09];
    let at = rsp.windows(4).position(|w| w == needle).unwrap();
    assert_eq!(u32::from_le_bytes(rsp[at + 4..at + 8].try_into().unwrap()), 64);
}

#[test]
fn store_over_several_pdus_becomes_one_message() {
    let cmd = request(C_STORE_RQ, 1, CT, "1.2.3", true);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut a = fast();
    let mut out = Vec::new();
    a.feed(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)]), &mut out);
    a.feed(&pdata(&[(1, 0, &data[..4000])]), &mut out);
    a.feed(&pdata(&[(1, 0, &data[4000..9000]), (1, MCH_LAST, &data[9000..])]), &mut out);
    assert_eq!(out.len(), 1);
    match &out[0] {
        Out::Message { context_id, command, data_set } => {
            assert_eq!(*context_id, 1);
            assert_eq!(command.sop_instance_uid, "1.2.3");
            assert_eq!(data_set.as_ref().map(|d| d.data_set()), Some(&data[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_messages_pass_through_unchanged() {
    let find = request(0x0020, 2, FIND, "", true);
    let ident = b"\x10\x00\x20\x00\x00\x00\x00\x00";
    let first = pdata(&[(5, MCH_COMMAND | MCH_LAST, &find)]);
    let second = pdata(&[(5, MCH_LAST, ident)]);
    let release = vec![0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let mut a = fast();
    let mut out = Vec::new();
    for p in [&first, &second, &release] {
        a.feed(p, &mut out);
    }
    assert_eq!(out, vec![Out::Pdu(first), Out::Pdu(second), Out::Pdu(release)]);
    // A C-STORE on a context not named fast is pynetdicom's too, data set included.
    let store = request(C_STORE_RQ, 3, CT, "9.9", true);
    let mut out = Vec::new();
    a.feed(&pdata(&[(7, MCH_COMMAND | MCH_LAST, &store), (7, MCH_LAST, b"ab")]), &mut out);
    assert_eq!(out, vec![Out::Pdu(pdata(&[(7, MCH_COMMAND | MCH_LAST, &store), (7, MCH_LAST, b"ab")]))]);
}

#[test]
fn command_split_across_pdus_is_passed_whole() {
    let find = request(0x0020, 2, FIND, "", false);
    let mut a = fast();
    let mut out = Vec::new();
    a.feed(&pdata(&[(5, MCH_COMMAND, &find[..10])]), &mut out);
    assert!(out.is_empty());
    a.feed(&pdata(&[(5, MCH_COMMAND | MCH_LAST, &find[10..])]), &mut out);
    assert_eq!(out, vec![Out::Pdu(pdata(&[(5, MCH_COMMAND | MCH_LAST, &find)]))]);
    // and the next message starts clean
    let echo = request(C_ECHO_RQ, 4, "1.2.840.10008.1.1", "", false);
    out.clear();
    a.feed(&pdata(&[(3, MCH_COMMAND | MCH_LAST, &echo)]), &mut out);
    assert!(matches!(&out[..], [Out::Message { context_id: 3, data_set: None, .. }]));
}

#[test]
fn broken_pdata_is_a_protocol_error_and_stops_interpretation() {
    let mut a = fast();
    let mut out = Vec::new();
    a.feed(&pdata(&[(1, 0, b"data first")]), &mut out);
    assert!(matches!(&out[..], [Out::ProtocolError(_)]));
    out.clear();
    a.feed(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &request(C_ECHO_RQ, 1, CT, "", false))]), &mut out);
    assert!(out.is_empty());

    let mut a = fast();
    let mut bad = pdata(&[(1, MCH_COMMAND | MCH_LAST, b"12345678")]);
    bad[9] = 0xFF; // PDV length beyond the PDU
    a.feed(&bad, &mut out);
    assert!(matches!(&out[..], [Out::ProtocolError(_)]));
}

#[test]
fn conn_reads_pdus_written_in_pieces_and_sees_eof() {
    let (mut tx, rx) = UnixStream::pair().unwrap();
    let (wake_tx, wake_rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 16_384, fast());
    let cmd = request(C_STORE_RQ, 9, CT, "1.2.9", true);
    let data = vec![7u8; 40_000];
    let mut wire = pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)]);
    for (i, chunk) in data.chunks(16_000).enumerate() {
        let last = if (i + 1) * 16_000 >= data.len() { MCH_LAST } else { 0 };
        wire.extend(pdata(&[(1, last, chunk)]));
    }
    let writer = std::thread::spawn(move || {
        for piece in wire.chunks(5_000) {
            tx.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        tx
    });
    let mut got = Vec::new();
    while got.is_empty() {
        let (out, wait) = conn.next(Some(wake_rx.as_raw_fd()), Duration::from_secs(5));
        assert_ne!(wait, Wait::Timeout);
        got = out;
    }
    assert!(matches!(&got[..], [Out::Message { data_set: Some(d), .. }] if d.data_set() == data));
    let tx = writer.join().unwrap();

    // nothing pending: a wake-up ends the wait at once, a timeout ends it after the timeout
    (&wake_tx).write_all(b"\0").unwrap();
    assert_eq!(conn.next(Some(wake_rx.as_raw_fd()), Duration::from_secs(5)), (vec![], Wait::Woken));
    assert_eq!(conn.next(None, Duration::from_millis(10)), (vec![], Wait::Timeout));

    // half a PDU, then the peer goes away
    (&tx).write_all(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)])[..20]).unwrap();
    drop(tx);
    match conn.next(None, Duration::from_secs(5)) {
        (out, Wait::Closed(Some(why))) => assert!(out.is_empty() && why.contains("inside a PDU"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn conn_refuses_a_pdu_far_beyond_the_announced_maximum() {
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 16_384, fast());
    (&tx).write_all(&[0x04, 0, 0x7F, 0xFF, 0xFF, 0xFF]).unwrap();
    let (out, _) = conn.next(None, Duration::from_secs(5));
    assert!(matches!(&out[..], [Out::ProtocolError(why)] if why.contains("exceeds")));
}

#[test]
fn message_pdus_in_one_pdu_or_split_to_the_limit() {
    let cmd = vec![1u8; 100];
    let data = vec![2u8; 300];
    let one = pdu::message_pdus(5, &cmd, Some(&data), 0);
    assert_eq!(one, pdata(&[(5, MCH_COMMAND | MCH_LAST, &cmd), (5, MCH_LAST, &data)]));
    let split = pdu::message_pdus(5, &cmd, Some(&data), 128);
    let mut a = Assembler::new(HashMap::from([(5, vec![])]));
    // re-read the split stream PDU by PDU: every PDU within the limit, fragments in order
    let (mut at, mut frags) = (0, Vec::new());
    while at < split.len() {
        let len = u32::from_be_bytes(split[at + 2..at + 6].try_into().unwrap()) as usize;
        assert!(len <= 128);
        for p in pdu::pdvs(&split[at + 6..at + 6 + len]).unwrap() {
            frags.push((p.control, p.fragment.to_vec()));
        }
        at += 6 + len;
    }
    let command: Vec<u8> =
        frags.iter().filter(|f| f.0 & MCH_COMMAND != 0).flat_map(|f| f.1.clone()).collect();
    let body: Vec<u8> = frags.iter().filter(|f| f.0 & MCH_COMMAND == 0).flat_map(|f| f.1.clone()).collect();
    assert_eq!((command, body), (cmd.clone(), data.clone()));
    assert_eq!(frags.iter().filter(|f| f.0 & MCH_LAST != 0).count(), 2);
    // not a command set pynetdicom could decode: still its to judge, data set and all
    let mut out = Vec::new();
    a.feed(&one, &mut out);
    assert_eq!(out, vec![Out::Pdu(one.clone())]);
}

#[test]
fn cancel_names_the_request_it_cancels() {
    let mut body = Vec::new();
    element(&mut body, 0x0100, &C_CANCEL.to_le_bytes());
    element(&mut body, 0x0120, &7u16.to_le_bytes());
    element(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
    let mut cmd = Vec::new();
    element(&mut cmd, 0x0000, &(body.len() as u32).to_le_bytes());
    cmd.extend_from_slice(&body);
    let mut a = Assembler::new(HashMap::from([(1, vec![0x0020, C_CANCEL])]));
    let mut out = Vec::new();
    a.feed(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)]), &mut out);
    match &out[..] {
        [Out::Message { command, data_set: None, .. }] => {
            assert_eq!((command.command_field, command.message_id_being_responded_to), (C_CANCEL, 7))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_plain_success_responses_are_fast() {
    let response = |status: u16, comment: Option<&[u8]>| {
        let mut body = Vec::new();
        element(&mut body, 0x0002, b"1.2.840.10008.5.1.4.1.1.2\0");
        element(&mut body, 0x0100, &0x8001u16.to_le_bytes());
        element(&mut body, 0x0120, &9u16.to_le_bytes());
        element(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
        element(&mut body, 0x0900, &status.to_le_bytes());
        if let Some(c) = comment {
            element(&mut body, 0x0902, c);
        }
        element(&mut body, 0x1000, b"1.2.3\0");
        let mut cmd = Vec::new();
        element(&mut cmd, 0x0000, &(body.len() as u32).to_le_bytes());
        cmd.extend_from_slice(&body);
        pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)])
    };
    let mut a = Assembler::new(HashMap::from([(1, vec![0x8001])]));
    let mut out = Vec::new();
    a.feed(&response(0, None), &mut out);
    match &out[..] {
        [Out::Message { command, .. }] => {
            assert_eq!((command.message_id_being_responded_to, command.status), (9, Some(0)));
            assert_eq!(command.sop_instance_uid, "1.2.3");
        }
        other => panic!("{other:?}"),
    }
    for (status, comment) in [(0xA700u16, None), (0, Some(&b"note"[..])), (0xB000, None)] {
        let pdu = response(status, comment);
        out.clear();
        a.feed(&pdu, &mut out);
        assert_eq!(out, vec![Out::Pdu(pdu)], "status {status:04X} must go to pynetdicom");
    }
    // A context that takes any status (the sub-operations of a C-GET answered natively).
    let mut any = Assembler::new(HashMap::from([(1, vec![0x8001])])).with_any_status([1]);
    for (status, comment) in [(0xA700u16, None), (0, Some(&b"note"[..])), (0xB000, None)] {
        out.clear();
        any.feed(&response(status, comment), &mut out);
        match &out[..] {
            [Out::Message { command, .. }] => assert_eq!(command.status, Some(status)),
            other => panic!("status {status:04X}: {other:?}"),
        }
    }
}

#[test]
fn a_move_request_names_its_destination() {
    let mut body = Vec::new();
    element(&mut body, 0x0002, b"1.2.840.10008.5.1.4.1.2.2.2\0");
    element(&mut body, 0x0100, &0x0021u16.to_le_bytes());
    element(&mut body, 0x0110, &3u16.to_le_bytes());
    element(&mut body, 0x0600, b"STORESCP");
    element(&mut body, 0x0700, &0u16.to_le_bytes());
    element(&mut body, 0x0800, &1u16.to_le_bytes());
    let mut cmd = Vec::new();
    element(&mut cmd, 0x0000, &(body.len() as u32).to_le_bytes());
    cmd.extend_from_slice(&body);
    let c = command::decode(&cmd).unwrap();
    assert_eq!((c.command_field, c.message_id, c.move_destination.as_str()), (0x0021, 3, "STORESCP"));
    assert!(!c.has_other_elements, "the destination is a known field");
}

#[test]
fn oversize_store_is_counted_not_kept_and_the_next_one_passes() {
    let mut a = fast().with_max_data_set(1000);
    let cmd = request(C_STORE_RQ, 1, CT, "1.2.3.4", true);
    let mut out = Vec::new();
    a.feed(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd), (1, 0, &[7u8; 600])]), &mut out);
    a.feed(&pdata(&[(1, 0, &[7u8; 600])]), &mut out);
    assert!(out.is_empty(), "nothing comes out before the last fragment: {out:?}");
    a.feed(&pdata(&[(1, MCH_LAST, &[7u8; 300])]), &mut out);
    match &out[..] {
        [Out::Oversize { context_id: 1, command, received: 1500 }] => assert_eq!(command.message_id, 1),
        other => panic!("expected one oversize message, got {other:?}"),
    }
    // the next object on the same association, within the limit, is a message as usual
    out.clear();
    let cmd = request(C_STORE_RQ, 2, CT, "1.2.3.5", true);
    a.feed(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd), (1, MCH_LAST, &[1u8; 1000])]), &mut out);
    assert!(matches!(&out[..], [Out::Message { data_set: Some(d), .. }] if d.data_set() == [1u8; 1000]));
    // one fragment past the limit in a single PDU
    out.clear();
    let cmd = request(C_STORE_RQ, 3, CT, "1.2.3.6", true);
    a.feed(&pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd), (1, MCH_LAST, &[1u8; 1001])]), &mut out);
    assert!(matches!(&out[..], [Out::Oversize { received: 1001, .. }]), "{out:?}");
}
