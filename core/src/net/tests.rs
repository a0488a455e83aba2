use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::command::{self, C_CANCEL_RQ as C_CANCEL, C_ECHO_RQ, C_STORE_RQ, NO_DATA_SET};
use super::pdu::{self, MCH_COMMAND, MCH_LAST};
use super::retrieve;
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

/// Pseudo-random piece sizes (xorshift), so a stream is cut anywhere: inside PDU and PDV
/// headers, inside fragments, several PDUs at once.
fn pieces(wire: &[u8], seed: u64, max: usize) -> Vec<Vec<u8>> {
    let (mut x, mut at, mut out) = (seed | 1, 0, Vec::new());
    while at < wire.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (1 + (x as usize) % max).min(wire.len() - at);
        out.push(wire[at..at + n].to_vec());
        at += n;
    }
    out
}

/// A thread writing `parts` to `tx`, a short pause every `pause_every` of them so that reads
/// also come short, then closing the stream.
fn spawn_writer(tx: UnixStream, parts: Vec<Vec<u8>>, pause_every: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for (i, part) in parts.iter().enumerate() {
            (&tx).write_all(part).unwrap();
            if i % pause_every == 0 {
                std::thread::sleep(Duration::from_micros(150));
            }
        }
    })
}

/// Every message `conn` completes until `n` have, from a writer sending `parts`.
fn read_messages(conn: &mut Conn, tx: UnixStream, parts: Vec<Vec<u8>>, n: usize) -> Vec<Out> {
    let writer = spawn_writer(tx, parts, 97);
    let mut got = Vec::new();
    while got.len() < n {
        let (out, wait) = conn.next(None, Duration::from_secs(5));
        assert_ne!(wait, Wait::Timeout, "after {} of {n} messages", got.len());
        assert!(!matches!(wait, Wait::Closed(_)), "closed after {} of {n}: {wait:?}", got.len());
        got.extend(out);
    }
    writer.join().unwrap();
    got
}

#[test]
fn large_data_set_fragments_are_received_in_place_however_the_stream_is_cut() {
    // C-STOREs as storescu sends them (one PDV per PDU, fragments of ~128 KiB), between them an
    // echo and a store whose command and first fragment share a PDU; every byte must arrive,
    // in order, however the bytes come in.
    let data: Vec<Vec<u8>> =
        (0..4u32).map(|k| (0..300_000 + 70_001 * k).map(|i| (i * 7 + k) as u8).collect()).collect();
    let mut wire = Vec::new();
    for (k, d) in data.iter().enumerate() {
        let cmd = request(C_STORE_RQ, k as u16 + 1, CT, &format!("1.2.3.{k}"), true);
        let chunks: Vec<&[u8]> = d.chunks(131_066).collect();
        if k == 2 {
            wire.extend(pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd), (1, 0, chunks[0])]));
        } else {
            wire.extend(pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)]));
            wire.extend(pdata(&[(1, 0, chunks[0])]));
        }
        for (i, c) in chunks.iter().enumerate().skip(1) {
            wire.extend(pdata(&[(1, if i + 1 == chunks.len() { MCH_LAST } else { 0 }, c)]));
        }
        if k == 1 {
            wire.extend(pdata(&[(
                3,
                MCH_COMMAND | MCH_LAST,
                &request(C_ECHO_RQ, 50, "1.2.840.10008.1.1", "", false),
            )]));
        }
    }
    for (seed, max) in [(1u64, 1_000usize), (2, 40_000), (3, 300_000), (4, 61), (5, wire.len())] {
        let (tx, rx) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(rx.as_raw_fd(), 131_072, fast());
        let got = read_messages(&mut conn, tx, pieces(&wire, seed, max), 5);
        let stores: Vec<(u16, &[u8])> = got
            .iter()
            .filter_map(|o| match o {
                Out::Message { command, data_set: Some(d), .. } => Some((command.message_id, d.data_set())),
                _ => None,
            })
            .collect();
        assert_eq!(stores.len(), 4, "seed {seed}");
        for (k, (d, (id, bytes))) in data.iter().zip(&stores).enumerate() {
            assert_eq!((*id, bytes.len()), (k as u16 + 1, d.len()), "seed {seed}");
            assert!(bytes == d, "seed {seed}: data set {k} differs");
        }
        assert!(
            matches!(&got[2], Out::Message { command, data_set: None, .. } if command.message_id == 50),
            "seed {seed}: the echo, in its place between the stores: {:?}",
            got.iter().map(std::mem::discriminant).collect::<Vec<_>>()
        );
        assert_eq!(conn.buffered(), 0, "seed {seed}");
    }
}

#[test]
fn the_rest_of_a_fragment_begun_in_the_buffer_is_received_in_place() {
    // Written in two steps, the first read before the second is sent: the command and 30,000
    // bytes of a 100,000-byte fragment, then the rest and a second fragment; the first
    // fragment's other 70,000 bytes go straight into the data set.
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 131_072, fast());
    let data: Vec<u8> = (0..180_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = pdata(&[(1, MCH_COMMAND | MCH_LAST, &request(C_STORE_RQ, 1, CT, "1.2.3.4", true))]);
    wire.extend(pdata(&[(1, 0, &data[..100_000])]));
    let first = wire.len() - 70_000;
    wire.extend(pdata(&[(1, MCH_LAST, &data[100_000..])]));
    (&tx).write_all(&wire[..first]).unwrap();
    assert_eq!(conn.next(None, Duration::from_millis(20)), (vec![], Wait::Timeout));
    assert_eq!(conn.received_in_place(), 0);
    // the PDU's headers and its first 30,000 bytes, already in the data set
    assert_eq!(conn.buffered(), 30_012);
    let rest = wire[first..].to_vec();
    let writer = std::thread::spawn(move || (&tx).write_all(&rest).unwrap());
    let mut got = Vec::new();
    while got.is_empty() {
        let (out, wait) = conn.next(None, Duration::from_secs(5));
        assert_ne!(wait, Wait::Timeout);
        got = out;
    }
    writer.join().unwrap();
    assert!(matches!(&got[..], [Out::Message { data_set: Some(d), .. }] if d.data_set() == data));
    // the first fragment's 70,000 left at least (the second's too if it came in pieces)
    assert!((70_000..=150_000).contains(&conn.received_in_place()), "{}", conn.received_in_place());
    assert_eq!(conn.buffered(), 0);
}

#[test]
fn a_peer_gone_inside_a_fragment_received_in_place_is_a_cut_short_close() {
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 131_072, fast());
    let cmd = request(C_STORE_RQ, 1, CT, "1.2.3.4", true);
    let mut wire = pdata(&[(1, MCH_COMMAND | MCH_LAST, &cmd)]);
    wire.extend(pdata(&[(1, MCH_LAST, &[5u8; 100_000])]));
    let cut = wire.len() - 50_000;
    (&tx).write_all(&wire[..cut]).unwrap();
    drop(tx);
    match conn.next(None, Duration::from_secs(5)) {
        (out, Wait::Closed(Some(why))) => {
            assert!(out.is_empty() && why.contains("inside a PDU"), "{why}");
            // what was received of the PDU: its headers and the first 50,000 fragment bytes
            assert!(why.contains(&format!("({} bytes)", 12 + 50_000)), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fragments_past_the_size_limit_or_on_another_context_are_not_received_in_place() {
    // over the limit: counted and dropped as before, the next store passes
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 131_072, fast().with_max_data_set(150_000));
    let mut wire = pdata(&[(1, MCH_COMMAND | MCH_LAST, &request(C_STORE_RQ, 1, CT, "1.2.3.4", true))]);
    wire.extend(pdata(&[(1, 0, &[1u8; 100_000])]));
    wire.extend(pdata(&[(1, MCH_LAST, &[1u8; 100_000])]));
    wire.extend(pdata(&[(1, MCH_COMMAND | MCH_LAST, &request(C_STORE_RQ, 2, CT, "1.2.3.5", true))]));
    wire.extend(pdata(&[(1, MCH_LAST, &[2u8; 120_000])]));
    let got = read_messages(&mut conn, tx, pieces(&wire, 9, 30_000), 2);
    assert!(matches!(&got[0], Out::Oversize { received: 200_000, .. }), "{:?}", got[0]);
    assert!(matches!(&got[1], Out::Message { data_set: Some(d), .. } if d.data_set() == [2u8; 120_000]));

    // a data set fragment on another context: the protocol error of the usual path
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 131_072, fast());
    let mut wire = pdata(&[(1, MCH_COMMAND | MCH_LAST, &request(C_STORE_RQ, 1, CT, "1.2.3.4", true))]);
    wire.extend(pdata(&[(3, MCH_LAST, &[1u8; 100_000])]));
    let got = read_messages(&mut conn, tx, pieces(&wire, 11, 20_000), 1);
    assert!(matches!(&got[..], [Out::ProtocolError(why)] if why.contains("context 1")), "{got:?}");
    assert_eq!(conn.received_in_place(), 0);
}

#[test]
fn conn_refuses_a_pdu_far_beyond_the_announced_maximum() {
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut conn = Conn::new(rx.as_raw_fd(), 16_384, fast());
    (&tx).write_all(&[0x04, 0, 0x7F, 0xFF, 0xFF, 0xFF]).unwrap();
    let (out, _) = conn.next(None, Duration::from_secs(5));
    assert!(matches!(&out[..], [Out::ProtocolError(why)] if why.contains("exceeds")));
    // reported once: a caller that reads on is told the stream is over, not the error again
    assert_eq!(conn.next(None, Duration::from_secs(5)), (vec![], Wait::Closed(None)));
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

/// A C-GET requestor on the other end of a socket pair: reads each C-STORE-RQ with its data set
/// (and passes over the pending responses) and answers it with the next of `statuses` (a C-CANCEL-RQ for `cancel_after` sent with the answer
/// to that request); returns the (command, data set) pairs it received.
fn store_peer(
    mut sock: UnixStream,
    statuses: Vec<u16>,
    cancel_after: Option<u16>,
) -> Vec<(Command, Vec<u8>)> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut command = Vec::new();
    let mut data = Vec::new();
    let mut statuses = statuses.into_iter();
    loop {
        let mut head = [0u8; pdu::HEADER_LEN];
        if sock.read_exact(&mut head).is_err() {
            return got;
        }
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut body = vec![0u8; len];
        if sock.read_exact(&mut body).is_err() {
            return got;
        }
        for pdv in pdu::pdvs(&body).unwrap() {
            if pdv.is_command() {
                command.extend_from_slice(pdv.fragment);
                if pdv.is_last() && !command::decode(&command).unwrap().has_data_set() {
                    command.clear(); // a pending C-GET-RSP, sent with the next request
                }
                continue;
            }
            data.extend_from_slice(pdv.fragment);
            if !pdv.is_last() {
                continue;
            }
            let cmd = command::decode(&command).unwrap();
            let Some(status) = statuses.next() else { return got };
            let rsp = encode_response(&ResponseFields {
                command_field: 0x8001,
                message_id_being_responded_to: cmd.message_id,
                sop_class_uid: &cmd.sop_class_uid,
                sop_instance_uid: &cmd.sop_instance_uid,
                status,
                error_comment: "",
            });
            let mut out = pdu::message_pdus(1, &rsp, None, 0);
            if cancel_after == Some(cmd.message_id) {
                out.extend(pdu::message_pdus(1, &cancel(cmd.message_id), None, 0));
            }
            sock.write_all(&out).unwrap();
            got.push((cmd, std::mem::take(&mut data)));
            command.clear();
        }
    }
}

fn cancel(msg_id: u16) -> Vec<u8> {
    let mut body = Vec::new();
    element(&mut body, 0x0100, &C_CANCEL.to_le_bytes());
    element(&mut body, 0x0120, &msg_id.to_le_bytes());
    element(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
    let mut out = Vec::new();
    element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Runs `n` sub-operations of 100 KB objects as a C-GET does (same association, pending
/// responses held for the next request) against `store_peer`.
fn run_get(
    n: usize,
    statuses: Vec<u16>,
    cancel_after: Option<u16>,
    fail_load: Option<usize>,
) -> (usize, retrieve::Stop, retrieve::Progress, Vec<(Command, Vec<u8>)>) {
    run_get_every(n, statuses, cancel_after, fail_load, Duration::ZERO, None, 1)
}

/// [`run_get`] with a pending response once `interval` has passed since `last_pending`.
fn run_get_every(
    n: usize,
    statuses: Vec<u16>,
    cancel_after: Option<u16>,
    fail_load: Option<usize>,
    interval: Duration,
    last_pending: Option<std::time::Instant>,
    loaders: usize,
) -> (usize, retrieve::Stop, retrieve::Progress, Vec<(Command, Vec<u8>)>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || store_peer(theirs, statuses, cancel_after));
    let items: Vec<retrieve::Item> = (0..n)
        .map(|i| retrieve::Item {
            context_id: 1,
            sop_class_uid: CT.into(),
            sop_instance_uid: format!("1.2.3.{i}"),
        })
        .collect();
    let route = retrieve::Route {
        store_fd: ours.as_raw_fd(),
        store_max_pdu: 16_384,
        send_timeout: Some(Duration::from_secs(5)),
        originator: None,
        rsp_fd: ours.as_raw_fd(),
        rsp_context_id: 5,
        rsp_command_field: 0x8010,
        rsp_sop_class_uid: "1.2.840.10008.5.1.4.1.2.2.3",
        rsp_message_id: 9,
        rsp_max_pdu: 16_384,
        same_association: true,
        wait: Duration::from_secs(5),
        pending_interval: interval,
    };
    let assembler = Assembler::new(HashMap::from([(1, vec![0x8001, C_CANCEL])])).with_any_status([1]);
    let mut conn = Conn::new(ours.as_raw_fd(), 0, assembler);
    let mut progress = retrieve::Progress {
        message_id: 0xFFFE, // the ids wrap from 0xFFFF to 1
        counts: SubOperations { remaining: n as u32 + 1, completed: 1, failed: 0, warning: 0 },
        // the pending response of the sub-operation before the batch, held for its first request
        unsent: pdu::message_pdus(
            5,
            &encode_retrieve_pending(
                0x8010,
                FIND,
                9,
                &SubOperations { remaining: n as u32 + 1, completed: 1, failed: 0, warning: 0 },
            ),
            None,
            0,
        ),
        last_pending,
    };
    let load = |i: usize| -> Result<Vec<u8>, String> {
        if Some(i) == fail_load {
            return Err(format!("object {i} unreadable"));
        }
        if loaders > 1 {
            // later items loaded sooner than earlier ones: the order on the wire is the batch's
            std::thread::sleep(Duration::from_millis(((n - i) % 3 * 4) as u64));
        }
        Ok(vec![i as u8; 100_000])
    };
    let (done, stop) = retrieve::run(&route, &mut conn, None, &items, load, loaders, &mut progress);
    drop(conn);
    ours.shutdown(std::net::Shutdown::Both).unwrap();
    (done, stop, progress, peer.join().unwrap())
}

/// The pending responses framed in `unsent` (after the `prefix` bytes), as (remaining, completed).
fn pending_counts(unsent: &[u8]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < unsent.len() {
        let len =
            u32::from_be_bytes([unsent[at + 2], unsent[at + 3], unsent[at + 4], unsent[at + 5]]) as usize;
        for pdv in pdu::pdvs(&unsent[at + pdu::HEADER_LEN..at + pdu::HEADER_LEN + len]).unwrap() {
            assert_eq!(pdv.context_id, 5);
            let f = pdv.fragment;
            let cmd = command::decode(f).unwrap();
            assert_eq!(
                (cmd.command_field, cmd.message_id_being_responded_to, cmd.status),
                (0x8010, 9, Some(0xFF00))
            );
            let us = |elem: u16| {
                let mut i = 0;
                while i < f.len() {
                    let e = u16::from_le_bytes([f[i + 2], f[i + 3]]);
                    let l = u32::from_le_bytes([f[i + 4], f[i + 5], f[i + 6], f[i + 7]]) as usize;
                    if e == elem {
                        return u16::from_le_bytes([f[i + 8], f[i + 9]]);
                    }
                    i += 8 + l;
                }
                panic!("no (0000,{elem:04X})");
            };
            assert_eq!((us(0x1022), us(0x1023)), (0, 0));
            out.push((us(0x1020), us(0x1021)));
        }
        at += pdu::HEADER_LEN + len;
    }
    out
}

#[test]
fn store_rq_and_pending_round_trip() {
    let rq = command::decode(&encode_store_rq(CT, "1.2.3", 7, Some(("MOVESCU", 3)))).unwrap();
    assert_eq!((rq.command_field, rq.message_id, rq.priority, rq.data_set_type), (C_STORE_RQ, 7, 0, 1));
    assert_eq!((rq.sop_class_uid.as_str(), rq.sop_instance_uid.as_str()), (CT, "1.2.3"));
    assert_eq!((rq.move_originator_ae.as_str(), rq.move_originator_message_id), ("MOVESCU", Some(3)));
    let plain = command::decode(&encode_store_rq(CT, "1.2.3", 7, None)).unwrap();
    assert_eq!((plain.move_originator_ae.as_str(), plain.move_originator_message_id), ("", None));
    let counts = SubOperations { remaining: 70_000, completed: 2, failed: 0, warning: 0 };
    let pending = pdu::message_pdus(5, &encode_retrieve_pending(0x8010, FIND, 9, &counts), None, 0);
    assert_eq!(pending_counts(&pending), vec![(0xFFFF, 2)]); // capped at what a US holds
}

#[test]
fn retrieve_batch_sends_every_object_and_makes_each_pending_response() {
    let (done, stop, progress, got) = run_get(4, vec![0; 4], None, None);
    assert!(matches!(stop, retrieve::Stop::End), "{stop:?}");
    assert_eq!(done, 4);
    assert_eq!(got.len(), 4);
    for (i, (cmd, data)) in got.iter().enumerate() {
        assert_eq!(cmd.sop_instance_uid, format!("1.2.3.{i}"));
        assert_eq!(data, &vec![i as u8; 100_000]);
    }
    let ids: Vec<u16> = got.iter().map(|(c, _)| c.message_id).collect();
    assert_eq!(ids, vec![0xFFFF, 1, 2, 3]);
    assert_eq!(progress.message_id, 3);
    assert_eq!((progress.counts.remaining, progress.counts.completed), (1, 5));
    // the last pending response waits for the next write; the earlier ones went with the requests
    assert_eq!(pending_counts(&progress.unsent), vec![(1, 5)]);
}

#[test]
fn retrieve_batch_makes_pending_responses_once_their_interval_has_passed() {
    let now = std::time::Instant::now();
    // One made just before the batch: none of the four is due within an hour; the one held
    // from before goes with the first request.
    let (done, stop, progress, got) =
        run_get_every(4, vec![0; 4], None, None, Duration::from_secs(3600), Some(now), 1);
    assert!(matches!(stop, retrieve::Stop::End), "{stop:?}");
    assert_eq!((done, got.len()), (4, 4));
    assert!(progress.unsent.is_empty());
    assert_eq!(progress.last_pending, Some(now));
    assert_eq!((progress.counts.remaining, progress.counts.completed), (1, 5));
    // None made yet: the first sub-operation's is due, then none within the hour.
    let (_, _, progress, _) = run_get_every(4, vec![0; 4], None, None, Duration::from_secs(3600), None, 1);
    assert!(progress.unsent.is_empty()); // it went with the second request
    assert!(progress.last_pending.is_some_and(|t| t > now));
    // The last one made long enough ago: due at once.
    let long_ago = now.checked_sub(Duration::from_secs(7200));
    let (_, _, progress, _) = run_get_every(1, vec![0], None, None, Duration::from_secs(3600), long_ago, 1);
    assert_eq!(pending_counts(&progress.unsent), vec![(1, 2)]);
}

#[test]
fn retrieve_batch_stops_at_a_warning_with_its_status() {
    let (done, stop, progress, got) = run_get(5, vec![0, 0, 0xB000, 0, 0], None, None);
    assert_eq!(done, 2);
    match stop {
        retrieve::Stop::Await { message_id, status, ref outs, ref closed, .. } => {
            assert_eq!((message_id, status), (got[2].0.message_id, Some(0xB000)));
            assert!(outs.is_empty() && closed.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(got.len(), 3); // nothing sent after the one that warned
    assert_eq!((progress.counts.remaining, progress.counts.completed), (4, 3));
    assert!(progress.unsent.is_empty()); // the last one went with the request that warned
}

#[test]
fn retrieve_batch_hands_back_a_cancel_read_with_a_response() {
    let (done, stop, progress, got) = run_get(5, vec![0; 5], Some(1), None);
    assert_eq!(done, 1); // the ids wrap: the second request was message 1
    match stop {
        retrieve::Stop::Await { status, ref outs, .. } => {
            assert_eq!(status, Some(0));
            assert!(matches!(&outs[..], [Out::Message { command, .. }] if command.command_field == C_CANCEL));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(got.len(), 2);
    assert_eq!(progress.counts.completed, 2); // the caller counts the one with the cancel
}

#[test]
fn retrieve_batch_on_several_loaders_sends_in_order() {
    for loaders in [2, 3, 20] {
        let (done, stop, progress, got) =
            run_get_every(9, vec![0; 9], None, None, Duration::ZERO, None, loaders);
        assert!(matches!(stop, retrieve::Stop::End), "{loaders}: {stop:?}");
        assert_eq!((done, got.len()), (9, 9));
        for (i, (cmd, data)) in got.iter().enumerate() {
            assert_eq!(cmd.sop_instance_uid, format!("1.2.3.{i}"), "{loaders} loaders");
            assert_eq!(data, &vec![i as u8; 100_000], "{loaders} loaders");
        }
        assert_eq!((progress.counts.remaining, progress.counts.completed), (1, 10));
    }
}

#[test]
fn retrieve_batch_on_several_loaders_stops_before_an_object_it_cannot_load() {
    for (loaders, fail) in [(2, 3), (2, 0), (3, 4)] {
        let (done, stop, _, got) =
            run_get_every(7, vec![0; 7], None, Some(fail), Duration::ZERO, None, loaders);
        assert_eq!((done, got.len()), (fail, fail), "{loaders} loaders, object {fail} unreadable");
        assert!(matches!(stop, retrieve::Stop::Load(ref why) if *why == format!("object {fail} unreadable")));
        for (i, (cmd, _)) in got.iter().enumerate() {
            assert_eq!(cmd.sop_instance_uid, format!("1.2.3.{i}"));
        }
    }
}

#[test]
fn retrieve_batch_stops_before_an_object_it_cannot_load() {
    let (done, stop, progress, got) = run_get(4, vec![0; 4], None, Some(2));
    assert_eq!(done, 2);
    assert!(matches!(stop, retrieve::Stop::Load(ref why) if why == "object 2 unreadable"), "{stop:?}");
    assert_eq!(got.len(), 2);
    assert_eq!(pending_counts(&progress.unsent), vec![(3, 3)]);
}

#[test]
fn conn_gives_what_the_assembler_gives_for_random_streams_cut_anywhere() {
    // Differential: random C-STORE and echo streams (data sets up to 400 KB in fragments up to
    // 150 KB, mostly one PDV a PDU, now and then two; a fragment now and then on a wrong
    // context, with the command bit or a reserved bit set; size limits of none, 100 and 300 KB)
    // read by `Conn` from a socket in random pieces must come out exactly as `Assembler::feed`
    // makes of the same PDUs, whether or not fragments were received in place.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut total_in_place = 0u64;
    for round in 0..60 {
        let limit = [0usize, 100_000, 300_000][rnd(3)];
        let mk = || {
            Assembler::new(HashMap::from([(1, vec![C_STORE_RQ]), (3, vec![C_ECHO_RQ])]))
                .with_max_data_set(limit)
        };
        let mut wire = Vec::new();
        let mut pdus: Vec<Vec<u8>> = Vec::new();
        let nmsg = 1 + rnd(6);
        for m in 0..nmsg {
            let kind = rnd(4);
            let (ctx, cmd, has_data) = match kind {
                0 | 1 => (1u8, request(C_STORE_RQ, m as u16, CT, "1.2.3", true), true),
                2 => (3u8, request(C_ECHO_RQ, m as u16, "1.2.840.10008.1.1", "", false), false),
                _ => (5u8, request(C_STORE_RQ, m as u16, CT, "1.2.3", true), true),
            };
            let mut pending: Vec<(u8, u8, Vec<u8>)> = vec![(ctx, MCH_COMMAND | MCH_LAST, cmd)];
            if has_data {
                let len = rnd(400_000);
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + m) as u8).collect();
                let mut at = 0;
                loop {
                    let n = (rnd(150_000)).min(len - at);
                    let last = at + n == len;
                    let mut c = if last { MCH_LAST } else { 0 };
                    let mut cx = ctx;
                    match rnd(60) {
                        0 => cx = ctx ^ 2,
                        1 => c |= MCH_COMMAND,
                        2 => c |= 0x04,
                        _ => {}
                    }
                    pending.push((cx, c, data[at..at + n].to_vec()));
                    at += n;
                    if last {
                        break;
                    }
                }
            }
            // group PDVs into PDUs: mostly one per PDU
            let mut i = 0;
            while i < pending.len() {
                let k = if rnd(5) == 0 { 2 } else { 1 };
                let group: Vec<(u8, u8, &[u8])> =
                    pending[i..(i + k).min(pending.len())].iter().map(|(a, b, c)| (*a, *b, &c[..])).collect();
                let p = pdata(&group);
                wire.extend_from_slice(&p);
                pdus.push(p);
                i += k;
            }
        }
        let mut want = Vec::new();
        let mut asm = mk();
        for p in &pdus {
            asm.feed(p, &mut want);
        }
        let (tx, rx) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(rx.as_raw_fd(), 131_072, mk());
        let parts = pieces(&wire, round as u64 + 7, [61usize, 5_000, 70_000, 1 << 20][rnd(4)]);
        // the writer's end is dropped when it is done: the reader then sees the stream close
        let writer = spawn_writer(tx, parts, 7);
        let mut got = Vec::new();
        loop {
            let (out, wait) = conn.next(None, Duration::from_secs(5));
            got.extend(out);
            match wait {
                Wait::Closed(r) => {
                    assert_eq!(r, None, "round {round}");
                    break;
                }
                Wait::Timeout => panic!("timeout round {round}"),
                _ => {}
            }
        }
        writer.join().unwrap();
        total_in_place += conn.received_in_place();
        assert_eq!(got.len(), want.len(), "round {round}");
        assert!(got == want, "round {round}");
    }
    assert!(total_in_place > 0, "the in-place path was never taken");
}
