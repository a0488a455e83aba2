//! Sending one DIMSE message with its data set without copying the data set: the PDU and PDV
//! headers (and the command set) are built in a small buffer, and one vectored write per pass
//! sends them interleaved with slices of the caller's data set.
//!
//! Why: the C-STORE sub-operations of a retrieve send whole objects (a 512 KB CT slice is five
//! 128 KB PDUs); framing them into a new buffer first cost a memcpy and an allocation of the
//! object per sub-operation on the thread whose latency paces the retrieve.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Duration;

use super::pdu::{HEADER_LEN, MCH_COMMAND, MCH_LAST, PDV_HEADER_LEN, P_DATA_TF};

/// One piece of the message: a range of the header buffer, or a slice of the data set.
enum Piece {
    Head(usize, usize),
    Data(usize, usize),
}

/// `prefix` (bytes already framed, sent first: e.g. a pending response), then the message's
/// P-DATA-TF PDUs, split as `pdu::message_pdus` splits them: the same bytes on the wire.
pub struct Framed<'a> {
    head: Vec<u8>,
    pieces: Vec<Piece>,
    data: &'a [u8],
}

impl<'a> Framed<'a> {
    pub fn new(prefix: &[u8], context_id: u8, command: &[u8], data: &'a [u8], max_pdu: usize) -> Self {
        let mut f =
            Framed { head: Vec::with_capacity(prefix.len() + command.len() + 64), pieces: Vec::new(), data };
        f.push_head(prefix);
        let limit = if max_pdu == 0 { usize::MAX } else { max_pdu };
        if command.len() + 2 * PDV_HEADER_LEN + data.len() <= limit {
            let body = command.len() + 2 * PDV_HEADER_LEN + data.len();
            f.pdu_header(body);
            f.pdv_header(command.len(), context_id, MCH_COMMAND | MCH_LAST);
            f.push_head(command);
            f.pdv_header(data.len(), context_id, MCH_LAST);
            f.pieces.push(Piece::Data(0, data.len()));
            return f;
        }
        let room = limit.saturating_sub(PDV_HEADER_LEN).max(1);
        let mut at = 0;
        let chunks: Vec<&[u8]> =
            if command.is_empty() { vec![&[][..]] } else { command.chunks(room).collect() };
        for (i, chunk) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() { MCH_LAST } else { 0 };
            f.pdu_header(PDV_HEADER_LEN + chunk.len());
            f.pdv_header(chunk.len(), context_id, MCH_COMMAND | last);
            f.push_head(chunk);
        }
        if data.is_empty() {
            f.pdu_header(PDV_HEADER_LEN);
            f.pdv_header(0, context_id, MCH_LAST);
        }
        while at < data.len() {
            let n = room.min(data.len() - at);
            let last = if at + n == data.len() { MCH_LAST } else { 0 };
            f.pdu_header(PDV_HEADER_LEN + n);
            f.pdv_header(n, context_id, last);
            f.pieces.push(Piece::Data(at, at + n));
            at += n;
        }
        f
    }

    fn push_head(&mut self, bytes: &[u8]) {
        let start = self.head.len();
        self.head.extend_from_slice(bytes);
        match self.pieces.last_mut() {
            Some(Piece::Head(_, end)) if *end == start => *end = self.head.len(),
            _ => self.pieces.push(Piece::Head(start, self.head.len())),
        }
    }

    fn pdu_header(&mut self, body: usize) {
        let mut h = [0u8; HEADER_LEN];
        h[0] = P_DATA_TF;
        h[2..].copy_from_slice(&(body as u32).to_be_bytes());
        self.push_head(&h);
    }

    fn pdv_header(&mut self, fragment: usize, context_id: u8, control: u8) {
        let mut h = [0u8; PDV_HEADER_LEN];
        h[..4].copy_from_slice(&((fragment + 2) as u32).to_be_bytes());
        h[4] = context_id;
        h[5] = control;
        self.push_head(&h);
    }

    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.pieces
            .iter()
            .map(|p| match *p {
                Piece::Head(a, b) => IoSlice::new(&self.head[a..b]),
                Piece::Data(a, b) => IoSlice::new(&self.data[a..b]),
            })
            .collect()
    }

    /// The bytes as one buffer (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.slices().iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// Writes everything to `fd` (see [`write_all`]).
    pub fn send(&self, fd: RawFd, timeout: Option<Duration>) -> io::Result<()> {
        write_all(fd, &mut self.slices(), timeout)
    }
}

/// Writes `slices` to `fd` (a connected socket, blocking or not: a full send buffer is waited
/// out with poll, for at most `timeout` without progress: a peer that stops reading must not
/// hold the sending thread for ever).
pub fn write_all(fd: RawFd, slices: &mut [IoSlice<'_>], timeout: Option<Duration>) -> io::Result<()> {
    let mut rest = slices;
    while !rest.is_empty() {
        let iov: &[IoSlice<'_>] = rest;
        let n = unsafe { libc::writev(fd, iov.as_ptr().cast(), iov.len().min(1024) as libc::c_int) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
                    if unsafe { libc::poll(&mut pfd, 1, ms) } == 0 {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading"));
                    }
                    continue;
                }
                _ => return Err(err),
            }
        }
        IoSlice::advance_slices(&mut rest, n as usize);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::pdu::message_pdus;

    #[test]
    fn the_same_bytes_as_message_pdus() {
        let command = vec![7u8; 90];
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        for max_pdu in [0, 16_384, 131_072, 300_200, 64] {
            for d in [&data[..], &data[..1], &[][..]] {
                let framed = Framed::new(b"PRE", 3, &command, d, max_pdu);
                let mut want = b"PRE".to_vec();
                want.extend(message_pdus(3, &command, Some(d), max_pdu));
                assert_eq!(framed.to_vec(), want, "max_pdu {max_pdu}, {} bytes", d.len());
            }
        }
    }

    #[test]
    fn sends_everything_through_a_socket() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (a, mut b) = UnixStream::pair().unwrap();
        let data = vec![5u8; 2_000_000];
        let framed = Framed::new(b"", 1, b"cmd!", &data, 16_384);
        let want = framed.to_vec();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        framed.send(a.as_raw_fd(), None).unwrap();
        drop(a);
        assert_eq!(reader.join().unwrap(), want);
    }
}
