//! Whole PDUs from a connected socket that Python owns, read without blocking forever: every
//! wait is bounded and also ends when the caller's wake-up descriptor becomes readable, so the
//! thread driving it still sees its timers and its outgoing queue.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::assembler::{Assembler, Out};
use super::pdu;

/// How a [`Conn::next`] call ended when it produced nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// Outputs are ready (possibly with more buffered).
    Ready,
    /// The timeout passed with nothing complete.
    Timeout,
    /// The wake-up descriptor was readable (it has been drained).
    Woken,
    /// The peer closed the connection or the socket failed; `Some` says what was cut short.
    Closed(Option<String>),
}

/// Reading side of one association's socket. The descriptor stays owned by the caller.
pub struct Conn {
    fd: RawFd,
    buf: Vec<u8>,
    start: usize,
    /// Largest PDU length field accepted. PS3.8 §9.3.1: our Maximum Length Received bounds the
    /// P-DATA-TF PDUs a conforming peer sends; some modalities overshoot it, so the bound is
    /// lenient (4x, at least 16 MiB) and only stops lengths that are garbage or an attack.
    max_pdu_len: usize,
    closed: Option<Option<String>>,
    /// A PDU was refused (its length): the stream is given up, every later call says so.
    broken: bool,
    assembler: Assembler,
    /// A data-set PDV being received straight into its data set ([`Self::begin_direct`]).
    direct: Option<Direct>,
    /// Data set bytes received in place so far (tests; the path's share of a run).
    in_place: u64,
    /// Re-arm TCP_QUICKACK after every read (associations on which we send the data: see
    /// dimse/common.py enable_quickack for the measured stall this avoids).
    pub quickack: bool,
}

const READ_CHUNK: usize = 256 * 1024;

/// A PDV being received in place: its bytes still to come, whether it is its data set's last
/// fragment, and the bytes of its PDU received so far (headers included).
#[derive(Debug, Clone, Copy)]
struct Direct {
    left: usize,
    last: bool,
    received: usize,
}

/// Least of a data-set PDV still to come for it to be received in place: below, one more
/// read into the buffer costs less than switching.
const DIRECT_MIN: usize = 16 * 1024;

impl Conn {
    /// `max_pdu` is the Maximum Length Received we announced (0 = unlimited).
    pub fn new(fd: RawFd, max_pdu: usize, assembler: Assembler) -> Self {
        let max_pdu_len = if max_pdu == 0 { 1 << 30 } else { max_pdu.saturating_mul(4).max(16 << 20) };
        Conn {
            fd,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            max_pdu_len,
            closed: None,
            broken: false,
            assembler,
            direct: None,
            in_place: 0,
            quickack: false,
        }
    }

    /// Data set bytes received straight into their data sets ([`Self::begin_direct`]).
    pub fn received_in_place(&self) -> u64 {
        self.in_place
    }

    /// Bytes received but not yet part of a complete PDU.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start + self.direct.map_or(0, |d| d.received)
    }

    /// Waits up to `timeout` for whole PDUs and returns what they completed, in order. Empty
    /// with `Timeout`/`Woken` if nothing completed (partial bytes stay buffered for the next call).
    pub fn next(&mut self, wake_fd: Option<RawFd>, timeout: Duration) -> (Vec<Out>, Wait) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            if self.broken {
                // The stream was refused once (below): nothing after it is read or reported again.
                return (out, Wait::Closed(None));
            }
            if let Err(why) = self.drain(&mut out) {
                out.push(Out::ProtocolError(why));
                self.closed = Some(None);
                self.broken = true;
                return (out, Wait::Ready);
            }
            if !out.is_empty() {
                return (out, Wait::Ready);
            }
            if let Some(reason) = &self.closed {
                return (out, Wait::Closed(reason.clone()));
            }
            if self.direct.is_none() {
                self.begin_direct();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_readable(wake_fd, left) {
                Ok(Some(w)) => return (out, w),
                Ok(None) if self.direct.is_some() => self.read_direct(&mut out),
                Ok(None) => self.read_available(),
                Err(e) => self.closed = Some(Some(format!("poll: {e}"))),
            }
        }
    }

    /// Whether the PDU begun in the buffer is one data-set PDV of the data set being gathered
    /// (as C-STORE's bulk is sent: one PDV per P-DATA-TF PDU), with much of it still to come;
    /// if so, what is buffered of it goes to the data set and the rest will be received there
    /// directly ([`Self::read_direct`]): one copy of the bytes fewer than through the buffer
    /// (~8 % of the server's CPU on a CT ingest, perf).
    fn begin_direct(&mut self) {
        const AT: usize = pdu::HEADER_LEN + pdu::PDV_HEADER_LEN;
        let avail = &self.buf[self.start..];
        if avail.len() < AT || avail[0] != pdu::P_DATA_TF {
            return;
        }
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let (pdu_len, pdv_len, context_id, control) =
            (be(&avail[2..6]), be(&avail[6..10]), avail[10], avail[11]);
        // One PDV filling the PDU (`drain` has checked the PDU length against the bound), of
        // a data set; anything else goes the usual way, through `feed` and its checks.
        if pdv_len < 2 || pdv_len.checked_add(4) != Some(pdu_len) || control & !pdu::MCH_LAST != 0 {
            return;
        }
        let (fragment, have) = (pdv_len - 2, avail.len() - AT);
        if have >= fragment || fragment - have < DIRECT_MIN {
            return;
        }
        let Some(data_set) = self.assembler.receiving_into(context_id, fragment) else { return };
        data_set.extend(&avail[AT..]);
        self.direct =
            Some(Direct { left: fragment - have, last: control & pdu::MCH_LAST != 0, received: avail.len() });
        self.buf.clear();
        self.start = 0;
    }

    /// [`Self::read_available`] for a PDV received in place: into the data set, no further
    /// than the PDV's end; once it is all in, the assembler is told (and may complete the
    /// message into `out`).
    fn read_direct(&mut self, out: &mut Vec<Out>) {
        let Some(Direct { left, last, received }) = self.direct else { return };
        let fd = self.fd;
        let Some(data_set) = self.assembler.receiving_into_current() else {
            // Not reached (nothing else feeds the assembler while a fragment comes in); were
            // it, the fragment's rest would be read as PDUs: stop instead.
            debug_assert!(false, "a fragment received in place without its data set");
            self.direct = None;
            self.closed = Some(None);
            out.push(Out::ProtocolError("a fragment received in place lost its data set".into()));
            return;
        };
        // SAFETY: recv writes at most `spare.len()` bytes into the given room and returns how
        // many (or -1): exactly `fill`'s contract.
        let n = unsafe {
            data_set.fill(left, |spare| {
                libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) as isize
            })
        };
        if n > 0 {
            self.rearm_quickack();
            let n = n as usize;
            self.in_place += n as u64;
            if n == left {
                self.direct = None;
                self.assembler.fragment_received(last, out);
            } else {
                self.direct = Some(Direct { left: left - n, last, received: received + n });
            }
        } else {
            self.read_failed(n);
        }
    }

    /// Moves every whole buffered PDU through the assembler.
    fn drain(&mut self, out: &mut Vec<Out>) -> Result<(), String> {
        loop {
            let avail = &self.buf[self.start..];
            if avail.len() < pdu::HEADER_LEN {
                break;
            }
            let len = u32::from_be_bytes([avail[2], avail[3], avail[4], avail[5]]) as usize;
            if len > self.max_pdu_len {
                return Err(format!(
                    "PDU type 0x{:02X} of {len} bytes exceeds the {} allowed",
                    avail[0], self.max_pdu_len
                ));
            }
            if avail.len() < pdu::HEADER_LEN + len {
                break;
            }
            let whole = &avail[..pdu::HEADER_LEN + len];
            self.assembler.feed(whole, out);
            self.start += pdu::HEADER_LEN + len;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(())
    }

    /// None: the socket is readable. Some: why not.
    fn wait_readable(&mut self, wake_fd: Option<RawFd>, left: Duration) -> std::io::Result<Option<Wait>> {
        let mut fds = [
            libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wake_fd.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
        ];
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of two pollfd (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(Some(Wait::Timeout))
            } else {
                Err(e)
            };
        }
        if fds[0].revents != 0 {
            return Ok(None); // readable, hung up or failed: the read tells which
        }
        if fds[1].revents != 0 {
            drain_wake(fds[1].fd);
            return Ok(Some(Wait::Woken));
        }
        Ok(Some(Wait::Timeout))
    }

    fn read_available(&mut self) {
        // Room for the whole PDU being received, so one recv can take all the kernel has.
        let avail = &self.buf[self.start..];
        let want = if avail.len() >= pdu::HEADER_LEN {
            let len = u32::from_be_bytes([avail[2], avail[3], avail[4], avail[5]]) as usize;
            (pdu::HEADER_LEN + len.min(self.max_pdu_len)).saturating_sub(avail.len()).max(READ_CHUNK)
        } else {
            READ_CHUNK
        };
        if self.start > 0 && self.buf.capacity() - self.buf.len() < want {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(want);
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: recv writes at most spare.len() bytes into the vector's spare capacity, and
        // set_len below covers only what it reports written.
        let n = unsafe { libc::recv(self.fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            // SAFETY: n bytes were just initialised by recv.
            unsafe { self.buf.set_len(self.buf.len() + n as usize) };
            self.rearm_quickack();
        } else {
            self.read_failed(n as isize);
        }
    }

    fn rearm_quickack(&self) {
        if self.quickack {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt with a pointer to a live c_int of the stated size; a failure
            // (socket closing) only means there is nothing left to acknowledge.
            unsafe {
                libc::setsockopt(
                    self.fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }

    /// A `recv` that returned `n <= 0`: the peer closed (inside a PDU or between two), or the
    /// socket failed; a read that would block or was interrupted is tried again later.
    fn read_failed(&mut self, n: isize) {
        if n == 0 {
            let partial = self.buffered();
            self.closed =
                Some((partial > 0).then(|| format!("connection closed inside a PDU ({partial} bytes)")));
        } else {
            let e = std::io::Error::last_os_error();
            if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) {
                self.closed = Some(Some(format!("recv: {e}")));
            }
        }
    }
}

fn drain_wake(fd: RawFd) {
    let mut scratch = [0u8; 64];
    loop {
        // SAFETY: reading into a local buffer of the stated size.
        let n = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), scratch.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            break;
        }
    }
}
