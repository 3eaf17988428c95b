//! sock_diag over NETLINK_SOCK_DIAG: building dump, lookup and destroy requests, and parsing
//! the replies into [`KernelSocket`](crate::model::KernelSocket).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::{DestroyOutcome, SysError};
use crate::model::{
    Cookie, Family, Inode, KernelSocket, NetnsId, StateSet, TcpState, TcpTimes, Timer, TimerKind,
};

// Wire constants from include/uapi/linux/{netlink,sock_diag,inet_diag}.h. The structures are
// small and fixed, so we build and parse them by hand: the crate's typed messages drop
// `idiag_expires` for TIME_WAIT, and a dump of 100k sockets wants no per-message allocation.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_MULTI: u16 = 0x02;
const NLM_F_ACK: u16 = 0x04;
/// NLM_F_ROOT | NLM_F_MATCH.
const NLM_F_DUMP: u16 = 0x300;
/// On NLMSG_ERROR: the request's payload was not echoed back (NETLINK_CAP_ACK).
const NLM_F_CAPPED: u16 = 0x100;
/// On NLMSG_ERROR: extended-ACK attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const INET_DIAG_INFO: u16 = 2;
/// sizeof(struct inet_diag_req_v2).
const INET_DIAG_REQ_LEN: usize = 56;
/// sizeof(struct inet_diag_msg).
const INET_DIAG_MSG_LEN: usize = 72;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
/// Offsets in `struct tcp_info` (include/uapi/linux/tcp.h), stable since Linux 2.6.
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;
const TCPI_LAST_ACK_RECV: usize = 56;

/// Receive buffer, reused for every datagram. The kernel fills dump datagrams up to ~32 KiB
/// (it sizes them after our largest recvmsg), so this never truncates.
const RECV_BUF_LEN: usize = 128 * 1024;
/// Kernel socket receive buffer we ask for: pipelined destroys queue one ACK per request.
const SO_RCVBUF_WANTED: usize = 4 * 1024 * 1024;
/// Requests sent in one datagram by [`DiagSocket::destroy_many`].
const DESTROY_BATCH: usize = 256;
/// A safety net only: the kernel answers sock_diag requests synchronously.
const RECV_TIMEOUT_SECS: i64 = 30;

/// A NETLINK_SOCK_DIAG socket, bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct DiagSocket {
    socket: Socket,
    buf: Vec<u8>,
    req: Vec<u8>,
    seq: u32,
    /// Requests per destroy datagram: their ACKs must fit in the kernel receive buffer.
    batch: usize,
}

/// `struct inet_diag_sockid`, in host types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: u64,
}

impl SockId {
    fn of(s: &KernelSocket) -> SockId {
        SockId {
            sport: s.local.port(),
            dport: s.remote.port(),
            src: addr_bytes(s.local.ip()),
            dst: addr_bytes(s.remote.ip()),
            interface: s.interface,
            cookie: s.cookie.0,
        }
    }
}

fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    }
}

fn family_name(f: u8) -> &'static str {
    if f == AF_INET6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// How a socket is named in errors: `127.0.0.1:80 -> 127.0.0.1:5555 (cookie 0x2a)`.
fn describe(s: &KernelSocket) -> String {
    format!("{} -> {} (cookie {})", s.local, s.remote, s.cookie)
}

/// Append one `nlmsghdr` + `inet_diag_req_v2` (72 bytes) to `out`.
#[allow(clippy::too_many_arguments)]
fn push_request(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    ext: u8,
    states: u32,
    id: &SockId,
) {
    let len = (NLMSG_HDRLEN + INET_DIAG_REQ_LEN) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
    out.push(family);
    out.push(IPPROTO_TCP);
    out.push(ext);
    out.push(0); // pad
    out.extend_from_slice(&states.to_ne_bytes());
    out.extend_from_slice(&id.sport.to_be_bytes());
    out.extend_from_slice(&id.dport.to_be_bytes());
    out.extend_from_slice(&id.src);
    out.extend_from_slice(&id.dst);
    out.extend_from_slice(&id.interface.to_ne_bytes());
    out.extend_from_slice(&(id.cookie as u32).to_ne_bytes());
    out.extend_from_slice(&((id.cookie >> 32) as u32).to_ne_bytes());
}

/// Bit for `idiag_ext`: extension N is requested by bit N-1.
const EXT_INFO: u8 = 1 << (INET_DIAG_INFO - 1);

/// One netlink message inside a received datagram.
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterate over the messages of one datagram; `Err` on a malformed length.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        let parsed = (|| {
            let len = u32_at(b, 0)? as usize;
            if len < NLMSG_HDRLEN || len > b.len() {
                return None;
            }
            Some((
                Message {
                    kind: u16_at(b, 4)?,
                    flags: u16_at(b, 6)?,
                    seq: u32_at(b, 8)?,
                    payload: &b[NLMSG_HDRLEN..len],
                },
                len,
            ))
        })();
        match parsed {
            Some((msg, len)) => {
                self.rest = &b[align4(len).min(b.len())..];
                Some(Ok(msg))
            }
            None => {
                self.rest = &[];
                Some(Err(format!(
                    "malformed netlink message header ({} bytes left)",
                    b.len()
                )))
            }
        }
    }
}

fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

/// The payload of an NLMSG_ERROR (or the int in an NLMSG_DONE): a positive errno, 0 for an ACK,
/// and the extended-ACK text when the kernel gave one.
#[derive(Debug, PartialEq, Eq)]
struct NlError {
    errno: i32,
    text: Option<String>,
}

fn parse_error(msg: &Message<'_>) -> Result<NlError, String> {
    let p = msg.payload;
    let error = u32_at(p, 0).ok_or("NLMSG_ERROR shorter than its error code")? as i32;
    let mut text = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request: its header only when capped, else the whole message.
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32_at(p, 4).map_or(NLMSG_HDRLEN, |l| l as usize)
        };
        let mut at = 4 + align4(echoed);
        while let (Some(len), Some(kind)) = (u16_at(p, at), u16_at(p, at + 2)) {
            let len = usize::from(len);
            if len < 4 || at + len > p.len() {
                break;
            }
            if kind & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG {
                let raw = &p[at + 4..at + len];
                let raw = raw.split(|&c| c == 0).next().unwrap_or(raw);
                text = Some(String::from_utf8_lossy(raw).into_owned());
            }
            at += align4(len);
        }
    }
    Ok(NlError {
        errno: error.saturating_neg(),
        text,
    })
}

fn timer_of(kind: u8, expires_ms: u32, retransmits: u8) -> Option<Timer> {
    let kind = match kind {
        0 => return None,
        1 => TimerKind::Retransmit,
        2 => TimerKind::Keepalive,
        3 => TimerKind::TimeWait,
        4 => TimerKind::ZeroWindowProbe,
        n => TimerKind::Other(n),
    };
    Some(Timer {
        kind,
        expires_ms: u64::from(expires_ms),
        retransmits,
    })
}

/// Parse one SOCK_DIAG_BY_FAMILY reply (`inet_diag_msg` + attributes). `Ok(None)` for a
/// family or state we do not know.
fn parse_socket(payload: &[u8], netns: NetnsId) -> Result<Option<KernelSocket>, String> {
    let p = payload;
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(format!(
            "inet_diag_msg of {} bytes, expected {INET_DIAG_MSG_LEN}",
            p.len()
        ));
    }
    let Some(state) = TcpState::from_kernel(p[1]) else {
        return Ok(None);
    };
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let word = |at: usize| u32_at(p, at).unwrap_or(0);
    let addr = |at: usize| -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&p[at..at + 16]);
        a
    };
    let (sport, dport, src, dst) = (port(4), port(6), addr(8), addr(24));
    let (family, local, remote) = match p[0] {
        AF_INET => {
            let v4 = |a: [u8; 16]| Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            (
                Family::Ipv4,
                SocketAddr::V4(SocketAddrV4::new(v4(src), sport)),
                SocketAddr::V4(SocketAddrV4::new(v4(dst), dport)),
            )
        }
        AF_INET6 => (
            Family::Ipv6,
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(src), sport, 0, 0)),
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(dst), dport, 0, 0)),
        ),
        _ => return Ok(None),
    };
    let cookie = u64::from(word(44)) | (u64::from(word(48)) << 32);
    let mut tcp = None;
    let mut at = INET_DIAG_MSG_LEN;
    while let (Some(len), Some(kind)) = (u16_at(p, at), u16_at(p, at + 2)) {
        let len = usize::from(len);
        if len < 4 || at + len > p.len() {
            return Err(format!(
                "malformed attribute at offset {at} of an inet_diag_msg"
            ));
        }
        if kind & NLA_TYPE_MASK == INET_DIAG_INFO {
            let info = &p[at + 4..at + len];
            if let (Some(sent), Some(data_recv), Some(ack_recv)) = (
                u32_at(info, TCPI_LAST_DATA_SENT),
                u32_at(info, TCPI_LAST_DATA_RECV),
                u32_at(info, TCPI_LAST_ACK_RECV),
            ) {
                tcp = Some(TcpTimes {
                    last_data_sent_ms: sent,
                    last_ack_recv_ms: ack_recv,
                    last_data_recv_ms: data_recv,
                });
            }
        }
        at += align4(len);
    }
    Ok(Some(KernelSocket {
        netns,
        family,
        state,
        local,
        remote,
        interface: word(40),
        cookie: Cookie(cookie),
        inode: Inode(u64::from(word(68))),
        uid: word(64),
        recv_q: word(56),
        send_q: word(60),
        timer: timer_of(p[2], word(52), p[3]),
        tcp,
    }))
}

fn outcome_of(errno: i32) -> DestroyOutcome {
    match errno {
        0 => DestroyOutcome::Destroyed,
        libc::ENOENT => DestroyOutcome::AlreadyGone,
        libc::ESTALE => DestroyOutcome::TupleReused,
        libc::EOPNOTSUPP => DestroyOutcome::Unsupported,
        libc::EPERM | libc::EACCES => DestroyOutcome::NotPermitted,
        n => DestroyOutcome::Failed(n),
    }
}

fn malformed(call: &str, why: String) -> SysError {
    SysError::new(call, io::Error::new(io::ErrorKind::InvalidData, why))
}

/// An NLMSG_ERROR answer as a [`SysError`], with the extended-ACK text as the hint.
fn kernel_error(call: &str, err: NlError) -> SysError {
    let e = SysError::new(call, io::Error::from_raw_os_error(err.errno));
    match err.text {
        Some(t) => e.with_hint(t),
        None => e,
    }
}

/// What the receive loop should do after one message.
enum Step {
    More,
    Finished,
}

/// Feed the messages of one datagram to `handle` until it says the reply is complete.
/// Messages whose sequence number is outside `seqs` (left over from an earlier request) are
/// skipped.
fn process_datagram(
    buf: &[u8],
    seqs: &std::ops::Range<u32>,
    call: &dyn Fn() -> String,
    handle: &mut impl FnMut(Message<'_>) -> Result<Step, SysError>,
) -> Result<Step, SysError> {
    for msg in messages(buf) {
        let msg = msg.map_err(|why| malformed(&call(), why))?;
        if !seqs.contains(&msg.seq) || msg.kind == NLMSG_NOOP {
            continue;
        }
        if msg.kind == NLMSG_OVERRUN {
            return Err(malformed(&call(), "NLMSG_OVERRUN: data lost".into()));
        }
        if let Step::Finished = handle(msg)? {
            return Ok(Step::Finished);
        }
    }
    Ok(Step::More)
}

/// One message of a dump reply: a socket, the final NLMSG_DONE, or an error.
fn dump_step(
    msg: Message<'_>,
    netns: NetnsId,
    out: &mut Vec<KernelSocket>,
    call: &dyn Fn() -> String,
) -> Result<Step, SysError> {
    match msg.kind {
        NLMSG_DONE => {
            // Since Linux 4.x NLMSG_DONE carries the dump's return code.
            let err = parse_error(&msg).unwrap_or(NlError {
                errno: 0,
                text: None,
            });
            if err.errno != 0 {
                return Err(kernel_error(&call(), err));
            }
            Ok(Step::Finished)
        }
        NLMSG_ERROR => {
            let err = parse_error(&msg).map_err(|why| malformed(&call(), why))?;
            if err.errno != 0 {
                return Err(kernel_error(&call(), err));
            }
            Ok(Step::Finished)
        }
        SOCK_DIAG_BY_FAMILY => {
            if let Some(s) =
                parse_socket(msg.payload, netns).map_err(|why| malformed(&call(), why))?
            {
                out.push(s);
            }
            // A reply without NLM_F_MULTI is complete in itself.
            Ok(if msg.flags & NLM_F_MULTI != 0 {
                Step::More
            } else {
                Step::Finished
            })
        }
        _ => Ok(Step::More),
    }
}

/// One message of a lookup reply: the socket, then the ACK; ENOENT/ESTALE mean gone.
fn lookup_step(
    msg: Message<'_>,
    netns: NetnsId,
    found: &mut Option<KernelSocket>,
    call: &dyn Fn() -> String,
) -> Result<Step, SysError> {
    match msg.kind {
        SOCK_DIAG_BY_FAMILY => {
            *found = parse_socket(msg.payload, netns).map_err(|why| malformed(&call(), why))?;
            Ok(Step::More) // the ACK follows
        }
        NLMSG_ERROR => {
            let err = parse_error(&msg).map_err(|why| malformed(&call(), why))?;
            match err.errno {
                0 => Ok(Step::Finished),
                libc::ENOENT | libc::ESTALE => {
                    *found = None;
                    Ok(Step::Finished)
                }
                _ => Err(kernel_error(&call(), err)),
            }
        }
        _ => Ok(Step::More),
    }
}

/// One ACK of a batch of SOCK_DESTROY requests numbered from `first`.
fn destroy_step(
    msg: Message<'_>,
    first: u32,
    got: &mut [Option<DestroyOutcome>],
    pending: &mut usize,
    call: &dyn Fn() -> String,
) -> Result<Step, SysError> {
    if msg.kind == NLMSG_ERROR {
        let err = parse_error(&msg).map_err(|why| malformed(&call(), why))?;
        if let Some(slot) = got.get_mut(msg.seq.wrapping_sub(first) as usize) {
            if slot.is_none() {
                *slot = Some(outcome_of(err.errno));
                *pending -= 1;
            }
        }
    }
    Ok(if *pending == 0 {
        Step::Finished
    } else {
        Step::More
    })
}

impl DiagSocket {
    /// Open a NETLINK_SOCK_DIAG socket in the calling thread's network namespace.
    pub fn open() -> Result<DiagSocket, SysError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)
            .map_err(|e| SysError::new("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", e))?;
        socket
            .bind_auto()
            .map_err(|e| SysError::new("bind(NETLINK_SOCK_DIAG socket)", e))?;
        // Errors echo only the request header, and may carry a text explaining them.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        let fd = socket.as_fd();
        // Root may exceed net.core.rmem_max; others get what rmem_max allows.
        if setsockopt(&fd, sockopt::RcvBufForce, &SO_RCVBUF_WANTED).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &SO_RCVBUF_WANTED);
        }
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(RECV_TIMEOUT_SECS, 0),
        )
        .map_err(|e| SysError::new("setsockopt(SO_RCVTIMEO) on the sock_diag socket", e.into()))?;
        // The kernel reports twice what it grants; an ACK costs ~1 KiB of it (skb truesize).
        let granted = nix::sys::socket::getsockopt(&fd, sockopt::RcvBuf).unwrap_or(212_992);
        let batch = (granted / 2048).clamp(16, DESTROY_BATCH);
        Ok(DiagSocket {
            socket,
            buf: vec![0; RECV_BUF_LEN],
            req: Vec::new(),
            seq: 0,
            batch,
        })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        // Sequence 0 is never used, so a stray message with seq 0 never matches.
        if self.seq.checked_add(n + 1).is_none() {
            self.seq = 0;
        }
        let first = self.seq + 1;
        self.seq += n;
        first
    }

    fn send_req(&mut self, call: &dyn Fn() -> String) -> Result<(), SysError> {
        loop {
            match self.socket.send(&self.req, 0) {
                Ok(n) if n == self.req.len() => return Ok(()),
                Ok(n) => {
                    return Err(SysError::new(
                        call(),
                        io::Error::other(format!("short send: {n} of {} bytes", self.req.len())),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SysError::new(format!("{}: send", call()), e)),
            }
        }
    }

    /// Receive datagrams until `handle` says the reply is complete. Messages whose sequence
    /// number is outside `seqs` (left over from an earlier request) are skipped.
    fn receive(
        &mut self,
        seqs: std::ops::Range<u32>,
        call: &dyn Fn() -> String,
        mut handle: impl FnMut(Message<'_>) -> Result<Step, SysError>,
    ) -> Result<(), SysError> {
        loop {
            let n = {
                let mut window: &mut [u8] = &mut self.buf[..];
                match self.socket.recv(&mut window, libc::MSG_TRUNC) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(SysError::new(format!("{}: recv", call()), e).with_hint(
                            format!("no answer from the kernel within {RECV_TIMEOUT_SECS} s"),
                        ))
                    }
                    Err(e) => return Err(SysError::new(format!("{}: recv", call()), e)),
                }
            };
            if n > self.buf.len() {
                return Err(malformed(
                    &call(),
                    format!("reply of {n} bytes truncated to {} bytes", self.buf.len()),
                ));
            }
            if let Step::Finished = process_datagram(&self.buf[..n], &seqs, call, &mut handle)? {
                return Ok(());
            }
        }
    }

    /// Dump the TCP sockets (IPv4, then IPv6) whose state is in `states`, with `tcp_info`.
    pub fn dump(
        &mut self,
        netns: NetnsId,
        states: StateSet,
    ) -> Result<Vec<KernelSocket>, SysError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump_family(family, netns, states, &mut out)?;
        }
        Ok(out)
    }

    fn dump_family(
        &mut self,
        family: u8,
        netns: NetnsId,
        states: StateSet,
        out: &mut Vec<KernelSocket>,
    ) -> Result<(), SysError> {
        let call = || {
            format!(
                "sock_diag dump of {} TCP sockets in {netns}",
                family_name(family)
            )
        };
        let seq = self.next_seq(1);
        self.req.clear();
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mask = states.kernel_mask();
        push_request(
            &mut self.req,
            SOCK_DIAG_BY_FAMILY,
            flags,
            seq,
            family,
            EXT_INFO,
            mask,
            &SockId::default(),
        );
        self.send_req(&call)?;
        self.receive(seq..seq + 1, &call, |msg| dump_step(msg, netns, out, &call))
    }

    /// Look one socket up again by its exact id and cookie. `None` when it is gone (ENOENT)
    /// or its tuple now belongs to another socket (ESTALE).
    pub fn lookup(&mut self, socket: &KernelSocket) -> Result<Option<KernelSocket>, SysError> {
        let call = || format!("sock_diag lookup of {}", describe(socket));
        let seq = self.next_seq(1);
        self.req.clear();
        let family = family_byte(socket.family);
        push_request(
            &mut self.req,
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            EXT_INFO,
            StateSet::all().kernel_mask(),
            &SockId::of(socket),
        );
        self.send_req(&call)?;
        let mut found = None;
        self.receive(seq..seq + 1, &call, |msg| {
            lookup_step(msg, socket.netns, &mut found, &call)
        })?;
        Ok(found)
    }

    /// SOCK_DESTROY one socket by its full id, cookie included, and wait for the kernel's
    /// answer. `Err` only when the request could not be sent or answered at all.
    pub fn destroy(&mut self, socket: &KernelSocket) -> Result<DestroyOutcome, SysError> {
        let mut out = self.destroy_batched(std::slice::from_ref(socket), 1)?;
        Ok(out.pop().unwrap_or(DestroyOutcome::Failed(libc::EIO)))
    }

    /// SOCK_DESTROY many sockets, pipelined: requests go out in batches (one datagram each,
    /// distinct sequence numbers) and the ACKs are matched back by sequence number. The
    /// outcomes are in the order of `sockets`.
    pub fn destroy_many(
        &mut self,
        sockets: &[KernelSocket],
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        let batch = self.batch;
        self.destroy_batched(sockets, batch)
    }

    fn destroy_batched(
        &mut self,
        sockets: &[KernelSocket],
        batch: usize,
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        let mut outcomes = Vec::with_capacity(sockets.len());
        for chunk in sockets.chunks(batch.max(1)) {
            let call = || match chunk {
                [one] => format!("SOCK_DESTROY {}", describe(one)),
                _ => format!("SOCK_DESTROY of {} sockets", chunk.len()),
            };
            let n = chunk.len() as u32;
            let first = self.next_seq(n);
            self.req.clear();
            for (i, s) in chunk.iter().enumerate() {
                push_request(
                    &mut self.req,
                    SOCK_DESTROY,
                    NLM_F_REQUEST | NLM_F_ACK,
                    first + i as u32,
                    family_byte(s.family),
                    0,
                    StateSet::all().kernel_mask(),
                    &SockId::of(s),
                );
            }
            self.send_req(&call)?;
            let mut got: Vec<Option<DestroyOutcome>> = vec![None; chunk.len()];
            let mut pending = chunk.len();
            let res = self.receive(first..first + n, &call, |msg| {
                destroy_step(msg, first, &mut got, &mut pending, &call)
            });
            match res {
                Ok(()) => {}
                // ACKs were dropped (receive buffer overflow): those requests have no known
                // outcome, and must not be reported as destroyed.
                Err(e) if e.errno() == Some(libc::ENOBUFS) && chunk.len() > 1 => {
                    tracing::warn!("{e}: {pending} SOCK_DESTROY answers lost");
                }
                Err(e) => return Err(e),
            }
            outcomes.extend(
                got.into_iter()
                    .map(|o| o.unwrap_or(DestroyOutcome::Failed(libc::ENOBUFS))),
            );
        }
        Ok(outcomes)
    }
}

impl AsRawFd for DiagSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for DiagSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
