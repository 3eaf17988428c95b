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

    fn same_tuple(&self, other: &SockId) -> bool {
        (self.sport, self.dport, self.src, self.dst)
            == (other.sport, other.dport, other.src, other.dst)
    }
}

/// The `inet_diag_sockid` at offset 4 of an `inet_diag_msg`.
fn parse_sock_id(p: &[u8]) -> Option<SockId> {
    let addr = |at: usize| -> Option<[u8; 16]> { p.get(at..at + 16)?.try_into().ok() };
    Some(SockId {
        sport: u16::from_be_bytes([*p.get(4)?, *p.get(5)?]),
        dport: u16::from_be_bytes([*p.get(6)?, *p.get(7)?]),
        src: addr(8)?,
        dst: addr(24)?,
        interface: u32_at(p, 40)?,
        cookie: u64::from(u32_at(p, 44)?) | (u64::from(u32_at(p, 48)?) << 32),
    })
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

/// A SOCK_DIAG_BY_FAMILY dump of one family's TCP sockets in `states`, with tcp_info.
fn dump_request(out: &mut Vec<u8>, seq: u32, family: u8, states: StateSet) {
    let flags = NLM_F_REQUEST | NLM_F_DUMP;
    let id = SockId::default();
    push_request(
        out,
        SOCK_DIAG_BY_FAMILY,
        flags,
        seq,
        family,
        EXT_INFO,
        states.kernel_mask(),
        &id,
    );
}

/// A SOCK_DIAG_BY_FAMILY request for exactly one socket (id and cookie), answered by the
/// socket then an ACK, or by an error. The kernel ignores `idiag_states` here.
fn lookup_request(out: &mut Vec<u8>, seq: u32, s: &KernelSocket) {
    push_lookup(out, seq, s, NLM_F_REQUEST | NLM_F_ACK);
}

/// [`lookup_request`] without the ACK: the kernel answers with the socket alone, or with
/// an error; either is the request's one answer.
fn lookup_request_unacked(out: &mut Vec<u8>, seq: u32, s: &KernelSocket) {
    push_lookup(out, seq, s, NLM_F_REQUEST);
}

fn push_lookup(out: &mut Vec<u8>, seq: u32, s: &KernelSocket, flags: u16) {
    let any = StateSet::all().kernel_mask();
    let id = SockId::of(s);
    push_request(
        out,
        SOCK_DIAG_BY_FAMILY,
        flags,
        seq,
        family_byte(s.family),
        EXT_INFO,
        any,
        &id,
    );
}

/// `idiag_cookie` meaning "any socket with this tuple".
const INET_DIAG_NOCOOKIE: u64 = u64::MAX;

/// A SOCK_DIAG_BY_FAMILY request for whatever socket holds `s`'s tuple now, cookie ignored,
/// without tcp_info.
fn probe_request(out: &mut Vec<u8>, seq: u32, s: &KernelSocket) {
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let (family, any) = (family_byte(s.family), StateSet::all().kernel_mask());
    let id = SockId {
        cookie: INET_DIAG_NOCOOKIE,
        ..SockId::of(s)
    };
    push_request(out, SOCK_DIAG_BY_FAMILY, flags, seq, family, 0, any, &id);
}

/// A SOCK_DESTROY of exactly one socket (id and cookie), answered by an ACK or an error.
fn destroy_request(out: &mut Vec<u8>, seq: u32, s: &KernelSocket) {
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let (family, id, any) = (
        family_byte(s.family),
        SockId::of(s),
        StateSet::all().kernel_mask(),
    );
    push_request(out, SOCK_DESTROY, flags, seq, family, 0, any, &id);
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
#[derive(Debug)]
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

/// What the kernel answered to one request of a pipelined batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Answer {
    /// From the request's NLMSG_ERROR: 0 for the ACK, else a positive errno. `None` until
    /// it arrives (or if it was lost).
    errno: Option<i32>,
    /// The id (tuple and cookie) of the socket a lookup request returned.
    found: Option<SockId>,
    /// That socket whole, when the batch asked for it ([`Parse::Socket`]).
    socket: Option<KernelSocket>,
}

/// How much of a lookup's reply a batch keeps.
#[derive(Debug, Clone, Copy)]
enum Parse {
    /// Its id only (tuple and cookie).
    Id,
    /// The whole socket, placed in this namespace.
    Socket(NetnsId),
}

/// One message answering a batch of requests numbered from `first`: every request gets
/// exactly one NLMSG_ERROR (ACK or errno); a lookup gets its socket before that.
fn batch_step(
    msg: Message<'_>,
    first: u32,
    parse: Parse,
    answers: &mut [Answer],
    pending: &mut usize,
    call: &dyn Fn() -> String,
) -> Result<Step, SysError> {
    if let Some(answer) = answers.get_mut(msg.seq.wrapping_sub(first) as usize) {
        match msg.kind {
            NLMSG_ERROR => {
                let err = parse_error(&msg).map_err(|why| malformed(&call(), why))?;
                if answer.errno.is_none() {
                    answer.errno = Some(err.errno);
                    *pending -= 1;
                }
            }
            SOCK_DIAG_BY_FAMILY => match parse {
                Parse::Id => answer.found = parse_sock_id(msg.payload),
                Parse::Socket(netns) => {
                    answer.socket =
                        parse_socket(msg.payload, netns).map_err(|why| malformed(&call(), why))?;
                    // Asked without an ACK: the socket is the whole answer.
                    if answer.errno.is_none() {
                        answer.errno = Some(0);
                        *pending -= 1;
                    }
                }
            },
            _ => {}
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
    ///
    /// With `drain`, read only what is already queued and stop when nothing is left.
    fn receive(
        &mut self,
        seqs: std::ops::Range<u32>,
        call: &dyn Fn() -> String,
        drain: bool,
        mut handle: impl FnMut(Message<'_>) -> Result<Step, SysError>,
    ) -> Result<(), SysError> {
        let flags = libc::MSG_TRUNC | if drain { libc::MSG_DONTWAIT } else { 0 };
        loop {
            let n = {
                let mut window: &mut [u8] = &mut self.buf[..];
                match self.socket.recv(&mut window, flags) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if drain && e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
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
        dump_request(&mut self.req, seq, family, states);
        self.send_req(&call)?;
        self.receive(seq..seq + 1, &call, false, |msg| {
            dump_step(msg, netns, out, &call)
        })
    }

    /// Look one socket up again by its exact id and cookie. `None` when it is gone (TCP
    /// answers ENOENT both when the tuple is free and when another socket holds it now).
    pub fn lookup(&mut self, socket: &KernelSocket) -> Result<Option<KernelSocket>, SysError> {
        let call = || format!("sock_diag lookup of {}", describe(socket));
        let seq = self.next_seq(1);
        self.req.clear();
        lookup_request(&mut self.req, seq, socket);
        self.send_req(&call)?;
        let mut found = None;
        self.receive(seq..seq + 1, &call, false, |msg| {
            lookup_step(msg, socket.netns, &mut found, &call)
        })?;
        Ok(found)
    }

    /// Look many sockets of this socket's namespace up again by their full id and cookie,
    /// pipelined like [`DiagSocket::destroy_many`], with `tcp_info`: each as the kernel
    /// has it now (its state may have changed), `None` where it is gone. Costs one hash
    /// lookup per socket, where a dump walks every socket of the host.
    pub fn lookup_many(
        &mut self,
        netns: NetnsId,
        sockets: &[&KernelSocket],
    ) -> Result<Vec<Option<KernelSocket>>, SysError> {
        let mut found = Vec::with_capacity(sockets.len());
        // A lookup's answer (its socket, with tcp_info) is larger than a destroy's ACK.
        let batch = (self.batch / 2).max(1);
        for chunk in sockets.chunks(batch) {
            let call = || format!("sock_diag lookup of {} sockets in {netns}", chunk.len());
            let answers =
                self.exchange(chunk, lookup_request_unacked, Parse::Socket(netns), &call)?;
            for answer in answers {
                found.push(match answer.errno {
                    Some(0) => answer.socket,
                    Some(libc::ENOENT) | Some(libc::ESTALE) => None,
                    Some(errno) => {
                        let e = NlError { errno, text: None };
                        return Err(kernel_error(&call(), e));
                    }
                    // Lost to a full receive buffer: unknown, so not reported as there.
                    None => {
                        return Err(SysError::new(
                            call(),
                            io::Error::from_raw_os_error(libc::ENOBUFS),
                        ))
                    }
                });
            }
        }
        Ok(found)
    }

    /// SOCK_DESTROY one socket by its full id, cookie included, and wait for the kernel's
    /// answer. `Err` only when the request could not be sent or answered at all.
    pub fn destroy(&mut self, socket: &KernelSocket) -> Result<DestroyOutcome, SysError> {
        let mut out = self.destroy_batched(&[socket], 1)?;
        Ok(out.pop().unwrap_or(DestroyOutcome::Failed(libc::EIO)))
    }

    /// SOCK_DESTROY many sockets of this socket's namespace, pipelined: requests go out in batches (one datagram each,
    /// distinct sequence numbers) and the ACKs are matched back by sequence number. The
    /// outcomes are in the order of `sockets`.
    pub fn destroy_many(
        &mut self,
        sockets: &[&KernelSocket],
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        let batch = self.batch;
        self.destroy_batched(sockets, batch)
    }

    fn destroy_batched(
        &mut self,
        sockets: &[&KernelSocket],
        batch: usize,
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        let mut outcomes = Vec::with_capacity(sockets.len());
        for chunk in sockets.chunks(batch.max(1)) {
            let call = || match chunk {
                [one] => format!("SOCK_DESTROY {}", describe(one)),
                _ => format!("SOCK_DESTROY of {} sockets", chunk.len()),
            };
            let answers = self.exchange(chunk, destroy_request, Parse::Id, &call)?;
            // A lost ACK has no known outcome, and must never count as destroyed.
            let mut outs: Vec<DestroyOutcome> = answers
                .iter()
                .map(|a| {
                    a.errno
                        .map_or(DestroyOutcome::Failed(libc::ENOBUFS), outcome_of)
                })
                .collect();
            self.tell_reused_from_gone(chunk, &mut outs);
            outcomes.extend(outs);
        }
        Ok(outcomes)
    }

    /// TCP answers a cookie mismatch with ENOENT, like a missing socket (only UDP says
    /// ESTALE): look the tuples up without a cookie to tell "another socket holds the tuple
    /// now" from "gone". Either way our socket is gone; this only refines the report.
    fn tell_reused_from_gone(&mut self, chunk: &[&KernelSocket], outs: &mut [DestroyOutcome]) {
        let gone: Vec<usize> = (0..chunk.len())
            .filter(|&i| outs[i] == DestroyOutcome::AlreadyGone)
            .collect();
        if gone.is_empty() {
            return;
        }
        let refs: Vec<&KernelSocket> = gone.iter().map(|&i| chunk[i]).collect();
        let call = || {
            format!(
                "sock_diag lookup of {} tuples SOCK_DESTROY did not find",
                refs.len()
            )
        };
        match self.exchange(&refs, probe_request, Parse::Id, &call) {
            Ok(answers) => {
                for (&i, answer) in gone.iter().zip(answers) {
                    // The lookup falls back to a listener on the port: only the exact
                    // tuple under another cookie counts.
                    let ours = SockId::of(chunk[i]);
                    if answer
                        .found
                        .is_some_and(|f| f.same_tuple(&ours) && f.cookie != ours.cookie)
                    {
                        outs[i] = DestroyOutcome::TupleReused;
                    }
                }
            }
            Err(e) => tracing::debug!("{e}"),
        }
    }

    /// Send one request per socket in a single datagram, with consecutive sequence numbers,
    /// and collect each one's answer, matched by sequence number.
    fn exchange(
        &mut self,
        sockets: &[&KernelSocket],
        build: fn(&mut Vec<u8>, u32, &KernelSocket),
        parse: Parse,
        call: &dyn Fn() -> String,
    ) -> Result<Vec<Answer>, SysError> {
        let n = sockets.len() as u32;
        let first = self.next_seq(n);
        self.req.clear();
        for (i, s) in sockets.iter().enumerate() {
            build(&mut self.req, first + i as u32, s);
        }
        self.send_req(call)?;
        let mut answers = vec![Answer::default(); sockets.len()];
        let mut pending = sockets.len();
        let mut step =
            |msg: Message<'_>| batch_step(msg, first, parse, &mut answers, &mut pending, call);
        match self.receive(first..first + n, call, false, &mut step) {
            Ok(()) => {}
            // The receive buffer overflowed and the kernel dropped some answers. It handled
            // the whole datagram inside send(), so every answer it kept is queued already:
            // read those, and leave the lost ones unknown.
            Err(e) if e.errno() == Some(libc::ENOBUFS) => {
                let drained = self.receive(first..first + n, call, true, &mut step);
                let lost = answers.iter().filter(|a| a.errno.is_none()).count();
                tracing::warn!("{e}: {lost} answers lost ({drained:?})");
            }
            Err(e) => return Err(e),
        }
        Ok(answers)
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

#[cfg(test)]
mod tests {
    use super::*;

    const NS: NetnsId = NetnsId {
        dev: 4,
        inode: 4026531840,
    };

    fn v4_socket() -> KernelSocket {
        KernelSocket {
            netns: NS,
            family: Family::Ipv4,
            state: TcpState::CloseWait,
            local: "10.0.0.1:443".parse().expect("addr"),
            remote: "10.0.0.2:51000".parse().expect("addr"),
            interface: 0,
            cookie: Cookie(0x1122_3344_5566_7788),
            inode: Inode(31337),
            uid: 1000,
            recv_q: 3,
            send_q: 0,
            timer: None,
            tcp: Some(TcpTimes {
                last_data_sent_ms: 5000,
                last_ack_recv_ms: 3012,
                last_data_recv_ms: 4000,
            }),
        }
    }

    /// The 72 bytes of a request, built by `f` with sequence number `seq`.
    fn built(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_dump_request() {
        let states = StateSet::from_iter([TcpState::CloseWait]);
        let got = built(|o| dump_request(o, 1, AF_INET6, states));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0x48, 0, 0, 0][..],          // nlmsg_len = 72
            &[20, 0],                      // nlmsg_type = SOCK_DIAG_BY_FAMILY
            &[0x01, 0x03],                 // nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP
            &[1, 0, 0, 0],                 // nlmsg_seq = 1
            &[0, 0, 0, 0],                 // nlmsg_pid = 0 (the kernel)
            &[10],                         // sdiag_family = AF_INET6
            &[6],                          // sdiag_protocol = IPPROTO_TCP
            &[0x02],                       // idiag_ext = 1 << (INET_DIAG_INFO - 1)
            &[0],                          // pad
            &[0x00, 0x01, 0, 0],           // idiag_states = 1 << TCP_CLOSE_WAIT (8)
            &[0, 0],                       // id.idiag_sport (ignored in a dump)
            &[0, 0],                       // id.idiag_dport
            &[0; 16],                      // id.idiag_src
            &[0; 16],                      // id.idiag_dst
            &[0, 0, 0, 0],                 // id.idiag_if
            &[0, 0, 0, 0, 0, 0, 0, 0],     // id.idiag_cookie[0..2]
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_dump_request_syn_recv_asks_for_new_syn_recv_too() {
        let got = built(|o| dump_request(o, 7, AF_INET, StateSet::from_iter([TcpState::SynRecv])));
        // idiag_states at offset 20: bits 3 (SYN_RECV) and 12 (NEW_SYN_RECV).
        assert_eq!(&got[20..24], &[0x08, 0x10, 0, 0]);
        assert_eq!(got[16], 2); // AF_INET
        assert_eq!(&got[8..12], &[7, 0, 0, 0]); // seq
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_destroy_request() {
        let got = built(|o| destroy_request(o, 0x0102_0304, &v4_socket()));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0x48, 0, 0, 0][..],          // nlmsg_len = 72
            &[21, 0],                      // nlmsg_type = SOCK_DESTROY
            &[0x05, 0x00],                 // nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK
            &[0x04, 0x03, 0x02, 0x01],     // nlmsg_seq = 0x01020304
            &[0, 0, 0, 0],                 // nlmsg_pid = 0
            &[2],                          // sdiag_family = AF_INET
            &[6],                          // sdiag_protocol = IPPROTO_TCP
            &[0],                          // idiag_ext = none
            &[0],                          // pad
            &[0xfe, 0x1f, 0, 0],           // idiag_states = every state (ignored for one socket)
            &[0x01, 0xbb],                 // id.idiag_sport = 443, big-endian
            &[0xc7, 0x38],                 // id.idiag_dport = 51000, big-endian
            &[10, 0, 0, 1], &[0; 12],      // id.idiag_src = 10.0.0.1 in src[0]
            &[10, 0, 0, 2], &[0; 12],      // id.idiag_dst = 10.0.0.2 in dst[0]
            &[0, 0, 0, 0],                 // id.idiag_if = 0
            &[0x88, 0x77, 0x66, 0x55],     // id.idiag_cookie[0] = low 32 bits, host order
            &[0x44, 0x33, 0x22, 0x11],     // id.idiag_cookie[1] = high 32 bits
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_lookup_request_ipv6_with_interface() {
        let mut s = v4_socket();
        s.family = Family::Ipv6;
        s.local = "[fe80::1]:22".parse().expect("addr");
        s.remote = "[fe80::2]:40000".parse().expect("addr");
        s.interface = 3;
        let got = built(|o| lookup_request(o, 9, &s));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0x48, 0, 0, 0][..],          // nlmsg_len = 72
            &[20, 0],                      // nlmsg_type = SOCK_DIAG_BY_FAMILY
            &[0x05, 0x00],                 // nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK (no dump)
            &[9, 0, 0, 0],                 // nlmsg_seq = 9
            &[0, 0, 0, 0],                 // nlmsg_pid = 0
            &[10],                         // sdiag_family = AF_INET6
            &[6],                          // sdiag_protocol = IPPROTO_TCP
            &[0x02],                       // idiag_ext = INET_DIAG_INFO
            &[0],                          // pad
            &[0xfe, 0x1f, 0, 0],           // idiag_states = every state
            &[0, 22],                      // id.idiag_sport = 22
            &[0x9c, 0x40],                 // id.idiag_dport = 40000
            &[0xfe, 0x80], &[0; 13], &[1], // id.idiag_src = fe80::1
            &[0xfe, 0x80], &[0; 13], &[2], // id.idiag_dst = fe80::2
            &[3, 0, 0, 0],                 // id.idiag_if = 3
            &[0x88, 0x77, 0x66, 0x55],     // id.idiag_cookie[0]
            &[0x44, 0x33, 0x22, 0x11],     // id.idiag_cookie[1]
        ]
        .concat();
        assert_eq!(got, want);
    }

    /// A `struct tcp_info` prefix (the 104 bytes of Linux 2.6) with the three times set.
    #[rustfmt::skip]
    fn tcp_info_bytes(sent: u32, data_recv: u32, ack_recv: u32) -> Vec<u8> {
        [
            &[8, 0, 0, 0, 0, 7, 0x77, 0][..], // state .. wscale: CLOSE_WAIT, options
            &[0; 36],                         // tcpi_rto .. tcpi_fackets (9 x u32)
            &sent.to_le_bytes(),              // tcpi_last_data_sent (offset 44)
            &[0; 4],                          // tcpi_last_ack_sent
            &data_recv.to_le_bytes(),         // tcpi_last_data_recv (offset 52)
            &ack_recv.to_le_bytes(),          // tcpi_last_ack_recv (offset 56)
            &[0; 44],                         // tcpi_pmtu .. tcpi_total_retrans
        ]
        .concat()
    }

    /// An IPv4 reply as the kernel sends it in a dump: CLOSE_WAIT 10.0.0.1:443 <- 10.0.0.2:51000.
    #[rustfmt::skip]
    fn v4_reply(seq: u32) -> Vec<u8> {
        let info = tcp_info_bytes(5000, 4000, 3012);
        [
            &[204, 0, 0, 0][..],           // nlmsg_len = 16 + 72 + 108 + 8
            &[20, 0],                      // nlmsg_type = SOCK_DIAG_BY_FAMILY
            &[0x02, 0],                    // nlmsg_flags = NLM_F_MULTI
            &seq.to_le_bytes(),            // nlmsg_seq
            &[0x39, 0x30, 0, 0],           // nlmsg_pid = 12345 (ours)
            &[2],                          // idiag_family = AF_INET
            &[8],                          // idiag_state = TCP_CLOSE_WAIT
            &[0],                          // idiag_timer = none
            &[0],                          // idiag_retrans
            &[0x01, 0xbb],                 // id.idiag_sport = 443
            &[0xc7, 0x38],                 // id.idiag_dport = 51000
            &[10, 0, 0, 1], &[0; 12],      // id.idiag_src
            &[10, 0, 0, 2], &[0; 12],      // id.idiag_dst
            &[0, 0, 0, 0],                 // id.idiag_if
            &[0x88, 0x77, 0x66, 0x55],     // id.idiag_cookie[0]
            &[0x44, 0x33, 0x22, 0x11],     // id.idiag_cookie[1]
            &[0, 0, 0, 0],                 // idiag_expires
            &[3, 0, 0, 0],                 // idiag_rqueue = 3 (unread bytes)
            &[0, 0, 0, 0],                 // idiag_wqueue
            &[0xe8, 0x03, 0, 0],           // idiag_uid = 1000
            &[0x69, 0x7a, 0, 0],           // idiag_inode = 31337
            &[108, 0], &[2, 0],            // nla_len = 4 + 104, nla_type = INET_DIAG_INFO
            &info,                         //   struct tcp_info
            &[5, 0], &[8, 0],              // nla_len = 5, nla_type = INET_DIAG_SHUTDOWN
            &[2], &[0, 0, 0],              //   RCV_SHUTDOWN, then padding to 4 bytes
        ]
        .concat()
    }

    /// An IPv6 reply: FIN_WAIT2 [2001:db8::1]:8080 -> [::ffff:192.0.2.7]:6000 (a dual-stack
    /// socket), keepalive timer 1.5 s with 2 probes, inode 0x12345678, cookie 0x2a.
    #[rustfmt::skip]
    fn v6_reply(seq: u32) -> Vec<u8> {
        let info = tcp_info_bytes(70_000, 0xffff_fff0, 1);
        [
            &[196, 0, 0, 0][..],           // nlmsg_len = 16 + 72 + 108
            &[20, 0],                      // nlmsg_type = SOCK_DIAG_BY_FAMILY
            &[0x02, 0],                    // nlmsg_flags = NLM_F_MULTI
            &seq.to_le_bytes(),            // nlmsg_seq
            &[0x39, 0x30, 0, 0],           // nlmsg_pid
            &[10],                         // idiag_family = AF_INET6
            &[5],                          // idiag_state = TCP_FIN_WAIT2
            &[2],                          // idiag_timer = keepalive
            &[2],                          // idiag_retrans = 2
            &[0x1f, 0x90],                 // id.idiag_sport = 8080
            &[0x17, 0x70],                 // id.idiag_dport = 6000
            &[0x20, 0x01, 0x0d, 0xb8], &[0; 11], &[1],       // id.idiag_src = 2001:db8::1
            &[0; 10], &[0xff, 0xff], &[192, 0, 2, 7],        // id.idiag_dst = ::ffff:192.0.2.7
            &[2, 0, 0, 0],                 // id.idiag_if = 2
            &[0x2a, 0, 0, 0],              // id.idiag_cookie[0]
            &[0, 0, 0, 0],                 // id.idiag_cookie[1]
            &[0xdc, 0x05, 0, 0],           // idiag_expires = 1500 ms
            &[0, 0, 0, 0],                 // idiag_rqueue
            &[0x10, 0, 0, 0],              // idiag_wqueue = 16
            &[0, 0, 0, 0],                 // idiag_uid = 0
            &[0x78, 0x56, 0x34, 0x12],     // idiag_inode = 0x12345678
            &[108, 0], &[2, 0],            // nla_len, nla_type = INET_DIAG_INFO
            &info,
        ]
        .concat()
    }

    /// NLMSG_DONE closing a dump, with the dump's return code.
    #[rustfmt::skip]
    fn done(seq: u32, code: i32) -> Vec<u8> {
        [
            &[20, 0, 0, 0][..],            // nlmsg_len = 16 + 4
            &[3, 0],                       // nlmsg_type = NLMSG_DONE
            &[0x02, 0],                    // nlmsg_flags = NLM_F_MULTI
            &seq.to_le_bytes(),            // nlmsg_seq
            &[0x39, 0x30, 0, 0],           // nlmsg_pid
            &code.to_le_bytes(),           // int: 0, or a negative errno
        ]
        .concat()
    }

    /// NLMSG_ERROR as sent on a NETLINK_CAP_ACK socket: error code, then the request's header.
    #[rustfmt::skip]
    fn error(seq: u32, code: i32) -> Vec<u8> {
        [
            &[36, 0, 0, 0][..],            // nlmsg_len = 16 + 4 + 16
            &[2, 0],                       // nlmsg_type = NLMSG_ERROR
            &[0x00, 0x01],                 // nlmsg_flags = NLM_F_CAPPED
            &seq.to_le_bytes(),            // nlmsg_seq
            &[0x39, 0x30, 0, 0],           // nlmsg_pid
            &code.to_le_bytes(),           // error: 0 = ACK, else a negative errno
            &[0x48, 0, 0, 0], &[21, 0], &[0x05, 0], &seq.to_le_bytes(), &[0; 4], // echoed header
        ]
        .concat()
    }

    fn expected_v4() -> KernelSocket {
        v4_socket()
    }

    fn expected_v6() -> KernelSocket {
        KernelSocket {
            netns: NS,
            family: Family::Ipv6,
            state: TcpState::FinWait2,
            local: "[2001:db8::1]:8080".parse().expect("addr"),
            // v4-mapped: kept as the kernel reports it.
            remote: "[::ffff:192.0.2.7]:6000".parse().expect("addr"),
            interface: 2,
            cookie: Cookie(0x2a),
            inode: Inode(0x1234_5678),
            uid: 0,
            recv_q: 0,
            send_q: 16,
            timer: Some(Timer {
                kind: TimerKind::Keepalive,
                expires_ms: 1500,
                retransmits: 2,
            }),
            tcp: Some(TcpTimes {
                last_data_sent_ms: 70_000,
                last_ack_recv_ms: 1,
                last_data_recv_ms: 0xffff_fff0,
            }),
        }
    }

    fn call() -> String {
        "sock_diag dump of IPv6 TCP sockets in net:[4026531840]".into()
    }

    /// Run a dump's receive loop over handwritten datagrams.
    fn run_dump(
        datagrams: &[Vec<u8>],
        seqs: std::ops::Range<u32>,
    ) -> Result<(Step, Vec<KernelSocket>), SysError> {
        let mut out = Vec::new();
        let mut last = Step::More;
        for d in datagrams {
            last = process_datagram(d, &seqs, &call, &mut |m| dump_step(m, NS, &mut out, &call))?;
            if let Step::Finished = last {
                break;
            }
        }
        Ok((last, out))
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_replies_parse_to_kernel_sockets() {
        let v4 = v4_reply(5);
        assert_eq!(parse_socket(&v4[16..], NS), Ok(Some(expected_v4())));
        let v6 = v6_reply(5);
        assert_eq!(parse_socket(&v6[16..], NS), Ok(Some(expected_v6())));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn dump_loop_multipart_until_done() {
        // Two datagrams, a stale message from an earlier request (seq 4) to skip, then DONE.
        let first = [v4_reply(5), v4_reply(4)].concat();
        let second = [v6_reply(5), done(5, 0)].concat();
        let (step, got) = run_dump(&[first, second], 5..6).expect("dump");
        assert!(matches!(step, Step::Finished));
        assert_eq!(got, vec![expected_v4(), expected_v6()]);
        // Without NLMSG_DONE the loop keeps reading.
        let (step, _) = run_dump(&[v4_reply(5)], 5..6).expect("dump");
        assert!(matches!(step, Step::More));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn dump_loop_turns_errors_into_named_errors() {
        let err =
            run_dump(&[[v4_reply(5), error(5, -libc::EACCES)].concat()], 5..6).expect_err("error");
        assert_eq!(err.errno(), Some(libc::EACCES));
        assert_eq!(
            err.to_string(),
            "sock_diag dump of IPv6 TCP sockets in net:[4026531840]: Permission denied (os error 13)"
        );
        let err = run_dump(&[done(5, -libc::EINTR)], 5..6).expect_err("done with error");
        assert_eq!(err.errno(), Some(libc::EINTR));
        // A truncated message is malformed, not silently dropped.
        let mut short = v4_reply(5);
        short.truncate(100);
        let err = run_dump(&[short], 5..6).expect_err("malformed");
        assert_eq!(err.source.kind(), io::ErrorKind::InvalidData);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn error_with_extended_ack_text() {
        #[rustfmt::skip]
        let msg: Vec<u8> = [
            &[48, 0, 0, 0][..],            // nlmsg_len = 16 + 4 + 16 + 12
            &[2, 0],                       // nlmsg_type = NLMSG_ERROR
            &[0x00, 0x03],                 // nlmsg_flags = NLM_F_CAPPED | NLM_F_ACK_TLVS
            &[5, 0, 0, 0],                 // nlmsg_seq
            &[0; 4],                       // nlmsg_pid
            &(-libc::EINVAL).to_le_bytes(),// error = -EINVAL
            &[0x48, 0, 0, 0], &[20, 0], &[0x05, 0], &[5, 0, 0, 0], &[0; 4], // echoed header
            &[11, 0], &[1, 0],             // nla_len = 4 + 7, NLMSGERR_ATTR_MSG
            b"bad id\0", &[0],             //   text, NUL, padding
        ]
        .concat();
        let m = messages(&msg).next().expect("one").expect("valid");
        assert_eq!(
            parse_error(&m),
            Ok(NlError {
                errno: libc::EINVAL,
                text: Some("bad id".into())
            })
        );
        let err = run_dump(&[msg], 5..6).expect_err("error");
        assert!(
            err.to_string()
                .ends_with("Invalid argument (os error 22) (bad id)"),
            "{err}"
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn time_wait_keeps_expires() {
        let mut m = v4_reply(5);
        m[16 + 1] = 6; // idiag_state = TIME_WAIT
        m[16 + 2] = 3; // idiag_timer = TIME_WAIT timer
        m[16 + 52..16 + 56].copy_from_slice(&41_500u32.to_le_bytes()); // idiag_expires
        let s = parse_socket(&m[16..], NS)
            .expect("parse")
            .expect("known state");
        assert_eq!(
            s.timer,
            Some(Timer {
                kind: TimerKind::TimeWait,
                expires_ms: 41_500,
                retransmits: 0
            })
        );
        m[16 + 1] = 13; // no such state: skipped, not an error
        assert_eq!(parse_socket(&m[16..], NS), Ok(None));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn destroy_acks_matched_by_sequence() {
        // Answers to requests 10, 11, 12, out of order and with one stale ACK (seq 3).
        let d = [
            error(12, -libc::ESTALE),
            error(3, 0),
            error(10, 0),
            error(11, -libc::ENOENT),
        ]
        .concat();
        let mut got = vec![Answer::default(); 3];
        let mut pending = 3;
        let step = process_datagram(&d, &(10..13), &call, &mut |m| {
            batch_step(m, 10, Parse::Id, &mut got, &mut pending, &call)
        })
        .expect("acks");
        assert!(matches!(step, Step::Finished));
        let errnos: Vec<Option<i32>> = got.iter().map(|a| a.errno).collect();
        assert_eq!(
            errnos,
            vec![Some(0), Some(libc::ENOENT), Some(libc::ESTALE)]
        );
        // A probe: the socket (with its cookie), then the ACK, for request 20.
        let d = [v4_reply(20), error(20, 0)].concat();
        let mut got = vec![Answer::default(); 1];
        let mut pending = 1;
        process_datagram(&d, &(20..21), &call, &mut |m| {
            batch_step(m, 20, Parse::Id, &mut got, &mut pending, &call)
        })
        .expect("probe");
        let want = Answer {
            errno: Some(0),
            found: Some(SockId::of(&v4_socket())),
            socket: None,
        };
        assert_eq!(got, vec![want]);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn unacked_lookups_are_answered_by_their_socket_or_an_error() {
        // Requests 30 and 31: the first found (its socket is its whole answer), the second
        // gone (ENOENT); a stale reply to request 3 is skipped.
        let d = [v4_reply(3), v4_reply(30), error(31, -libc::ENOENT)].concat();
        let mut got = vec![Answer::default(); 2];
        let mut pending = 2;
        let step = process_datagram(&d, &(30..32), &call, &mut |m| {
            batch_step(m, 30, Parse::Socket(NS), &mut got, &mut pending, &call)
        })
        .expect("answers");
        assert!(matches!(step, Step::Finished));
        assert_eq!(got[0].errno, Some(0));
        let found = got[0].socket.as_ref().expect("the socket");
        assert_eq!(
            (found.cookie, found.local),
            (v4_socket().cookie, v4_socket().local)
        );
        assert_eq!(
            (got[1].errno, got[1].socket.is_none()),
            (Some(libc::ENOENT), true)
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_unacked_lookup_request_is_the_lookup_without_nlm_f_ack() {
        let got = built(|o| lookup_request_unacked(o, 9, &v4_socket()));
        let mut want = built(|o| lookup_request(o, 9, &v4_socket()));
        want[6] = 0x01; // nlmsg_flags = NLM_F_REQUEST only
        assert_eq!(got, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_probe_request_has_no_cookie() {
        let got = built(|o| probe_request(o, 2, &v4_socket()));
        let mut want = built(|o| destroy_request(o, 2, &v4_socket()));
        want[4] = 20; // nlmsg_type = SOCK_DIAG_BY_FAMILY
        want[64..72].copy_from_slice(&[0xff; 8]); // idiag_cookie = INET_DIAG_NOCOOKIE
        assert_eq!(got, want);
    }

    #[test]
    fn errno_to_outcome() {
        assert_eq!(outcome_of(0), DestroyOutcome::Destroyed);
        assert_eq!(outcome_of(libc::ENOENT), DestroyOutcome::AlreadyGone);
        assert_eq!(outcome_of(libc::ESTALE), DestroyOutcome::TupleReused);
        assert_eq!(outcome_of(libc::EOPNOTSUPP), DestroyOutcome::Unsupported);
        assert_eq!(outcome_of(libc::EPERM), DestroyOutcome::NotPermitted);
        assert_eq!(outcome_of(libc::EACCES), DestroyOutcome::NotPermitted);
        assert_eq!(outcome_of(libc::EBUSY), DestroyOutcome::Failed(libc::EBUSY));
    }

    #[test]
    fn tcp_info_offsets_match_libc() {
        assert_eq!(
            std::mem::offset_of!(libc::tcp_info, tcpi_last_data_sent),
            TCPI_LAST_DATA_SENT
        );
        assert_eq!(
            std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv),
            TCPI_LAST_DATA_RECV
        );
        assert_eq!(
            std::mem::offset_of!(libc::tcp_info, tcpi_last_ack_recv),
            TCPI_LAST_ACK_RECV
        );
    }

    /// Real-kernel tests, each in its own network namespace.
    mod kernel {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::os::fd::AsFd;
        use std::time::{Duration, Instant};

        use super::super::*;
        use crate::sys::netns::testns::TestNetns;
        use crate::sys::netns::{open_diag_socket_in, own_netns_id};
        use nix::sys::socket::{setsockopt, sockopt};

        struct Pair {
            _listener: TcpListener,
            client: TcpStream,
            server: TcpStream,
        }

        fn connected(
            ns: &TestNetns,
            listen_on: &'static str,
            connect_to: Option<&'static str>,
        ) -> Pair {
            ns.run(move || {
                let listener = TcpListener::bind(listen_on).expect("bind");
                let port = listener.local_addr().expect("addr").port();
                let target = match connect_to {
                    Some(ip) => SocketAddr::new(ip.parse().expect("ip"), port),
                    None => listener.local_addr().expect("addr"),
                };
                let client = TcpStream::connect(target).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                Pair {
                    _listener: listener,
                    client,
                    server,
                }
            })
        }

        fn open(ns: &TestNetns) -> DiagSocket {
            open_diag_socket_in(&ns.netns(), own_netns_id().expect("own netns"))
                .expect("open")
                .0
        }

        fn inode_of(fd: impl AsFd) -> Inode {
            Inode(nix::sys::stat::fstat(fd).expect("fstat").st_ino)
        }

        /// Dump until a socket in `state` matching `pred` shows up (loopback is fast, not instant).
        fn wait_for(
            diag: &mut DiagSocket,
            ns: &TestNetns,
            state: TcpState,
            pred: impl Fn(&KernelSocket) -> bool,
        ) -> KernelSocket {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let found = diag
                    .dump(ns.id, StateSet::from_iter([state]))
                    .expect("dump");
                if let Some(s) = found.into_iter().find(|s| pred(s)) {
                    return s;
                }
                assert!(Instant::now() < deadline, "no {state} socket appeared");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn close_wait(
            ns: &TestNetns,
            diag: &mut DiagSocket,
            listen_on: &'static str,
        ) -> (Pair, KernelSocket) {
            let p = connected(ns, listen_on, None);
            p.client.shutdown(Shutdown::Write).expect("shutdown client");
            let local = p.server.local_addr().expect("addr");
            let remote = p.server.peer_addr().expect("addr");
            let s = wait_for(diag, ns, TcpState::CloseWait, |s| {
                s.local == local && s.remote == remote
            });
            (p, s)
        }

        #[test]
        fn dumps_close_wait_with_identity_and_filters_states() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            let _established = connected(&ns, "127.0.0.1:0", None);
            let p = connected(&ns, "127.0.0.1:0", None);
            let (local, remote) = (
                p.server.local_addr().expect("a"),
                p.server.peer_addr().expect("a"),
            );
            let client_local = p.client.local_addr().expect("a");
            drop(p.client);
            let s = wait_for(&mut diag, &ns, TcpState::CloseWait, |s| s.local == local);
            assert_eq!(s.remote, remote);
            assert_eq!(s.family, Family::Ipv4);
            assert_eq!(s.netns, ns.id);
            assert_eq!(s.inode, inode_of(&p.server));
            assert_ne!(s.cookie, Cookie(0));
            // Recv-Q counts the unread FIN: 1 until the owner reads EOF.
            assert_eq!((s.uid, s.interface, s.recv_q, s.send_q), (0, 0, 1, 0));
            assert!(s.tcp.is_some(), "INET_DIAG_INFO missing");

            // The kernel filters: only the one CLOSE_WAIT socket, no LISTEN or ESTABLISHED.
            let only = diag
                .dump(ns.id, StateSet::from_iter([TcpState::CloseWait]))
                .expect("dump");
            assert_eq!(only.len(), 1, "{only:?}");
            let mut again = only[0].clone();
            again.tcp = s.tcp; // tcp_info times move between dumps
            assert_eq!(again, s);
            // Once the owner reads the EOF, the FIN no longer counts in Recv-Q.
            assert_eq!((&p.server).read(&mut [0u8; 4]).expect("eof"), 0);
            let after = diag.lookup(&s).expect("lookup").expect("still there");
            assert_eq!(after.recv_q, 0);
            // The peer's ACK of the client's FIN can be delayed (~1 ms on loopback): wait
            // until the orphaned client has left FIN_WAIT1 (flaked once without this).
            let mut all = diag.dump(ns.id, StateSet::all()).expect("dump");
            for _ in 0..200 {
                let orphan = all.iter().find(|s| s.local == client_local);
                if orphan.is_some_and(|o| o.state != TcpState::FinWait1) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                all = diag.dump(ns.id, StateSet::all()).expect("dump");
            }
            let count = |st| all.iter().filter(|s| s.state == st).count();
            assert_eq!(count(TcpState::Listen), 2);
            assert_eq!(count(TcpState::Established), 2);
            assert_eq!(count(TcpState::CloseWait), 1);
            // The closed client is an orphan FIN_WAIT2 minisocket: no inode, no tcp_info,
            // a TIME_WAIT timer whose remaining time we keep.
            let orphan = all
                .iter()
                .find(|s| s.local == client_local)
                .expect("orphan client");
            assert_eq!(orphan.state, TcpState::FinWait2);
            assert_eq!(orphan.inode, Inode(0));
            assert_eq!(orphan.tcp, None);
            let timer = orphan.timer.expect("fin_wait2 timer");
            assert_eq!(timer.kind, TimerKind::TimeWait);
            assert!((50_000..=60_000).contains(&timer.expires_ms), "{timer:?}");
        }

        #[test]
        fn dumps_owned_fin_wait2() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            let p = connected(&ns, "127.0.0.1:0", None);
            p.client.shutdown(Shutdown::Write).expect("shutdown");
            let local = p.client.local_addr().expect("a");
            let s = wait_for(&mut diag, &ns, TcpState::FinWait2, |s| s.local == local);
            assert_eq!(s.remote, p.client.peer_addr().expect("a"));
            assert_eq!(s.inode, inode_of(&p.client));
            assert_ne!(s.cookie, Cookie(0));
            assert_ne!(
                s.timer.map(|t| t.kind),
                Some(TimerKind::TimeWait),
                "owned, not a minisocket"
            );
            assert!(s.tcp.is_some());
        }

        #[test]
        fn dumps_ipv6_and_v4_mapped() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            let (p, s) = close_wait(&ns, &mut diag, "[::1]:0");
            assert_eq!(s.family, Family::Ipv6);
            assert_eq!(s.local.ip(), "::1".parse::<IpAddr>().expect("ip"));
            assert_eq!(s.inode, inode_of(&p.server));
            // A dual-stack listener accepting IPv4: an AF_INET6 socket with mapped addresses.
            let m = connected(&ns, "[::]:0", Some("127.0.0.1"));
            m.client.shutdown(Shutdown::Write).expect("shutdown");
            let port = m.server.local_addr().expect("a").port();
            let mapped = wait_for(&mut diag, &ns, TcpState::CloseWait, |s| {
                s.local.port() == port
            });
            assert_eq!(mapped.family, Family::Ipv6);
            assert_eq!(
                mapped.local.ip(),
                "::ffff:127.0.0.1".parse::<IpAddr>().expect("ip")
            );
            assert_eq!(mapped.inode, inode_of(&m.server));
            assert_eq!(
                diag.lookup(&mapped).expect("lookup").map(|x| x.cookie),
                Some(mapped.cookie)
            );
            assert_eq!(
                diag.destroy(&mapped).expect("destroy"),
                DestroyOutcome::Destroyed
            );
        }

        #[test]
        fn destroy_aborts_close_wait_and_reports_each_case() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            let (p, s) = close_wait(&ns, &mut diag, "127.0.0.1:0");
            let again = diag.lookup(&s).expect("lookup").expect("still there");
            assert_eq!(
                (again.cookie, again.inode, again.state),
                (s.cookie, s.inode, s.state)
            );

            let mut wrong = s.clone();
            wrong.cookie = Cookie(s.cookie.0 ^ 1);
            assert_eq!(
                diag.destroy(&wrong).expect("destroy"),
                DestroyOutcome::TupleReused
            );
            assert_eq!(diag.lookup(&wrong).expect("lookup"), None);
            assert!(
                diag.lookup(&s).expect("lookup").is_some(),
                "a wrong cookie touched nothing"
            );

            assert_eq!(
                diag.destroy(&s).expect("destroy"),
                DestroyOutcome::Destroyed
            );
            let err = (&p.server).write(b"x").expect_err("aborted");
            assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
            assert_eq!(diag.lookup(&s).expect("lookup"), None);
            assert_eq!(
                diag.destroy(&s).expect("destroy"),
                DestroyOutcome::AlreadyGone
            );
        }

        #[test]
        fn destroy_many_pipelines_and_keeps_order() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            let mut pairs = Vec::new();
            let mut list = Vec::new();
            for _ in 0..7 {
                let (p, s) = close_wait(&ns, &mut diag, "127.0.0.1:0");
                pairs.push(p);
                list.push(s);
            }
            // A stale copy of the last one (another cookie), while that one still lives.
            let mut wrong = list[6].clone();
            wrong.cookie = Cookie(wrong.cookie.0 ^ 1);
            list.insert(0, wrong);
            // And an ESTABLISHED socket, whose owner will see the abort on recv.
            let est = connected(&ns, "127.0.0.1:0", None);
            let (local, remote) = (
                est.server.local_addr().expect("a"),
                est.server.peer_addr().expect("a"),
            );
            list.push(wait_for(&mut diag, &ns, TcpState::Established, |s| {
                s.local == local && s.remote == remote
            }));
            // Batches of 3 so the 9 requests span three datagrams.
            let got = diag
                .destroy_batched(&list.iter().collect::<Vec<_>>(), 3)
                .expect("destroy");
            let mut want = vec![DestroyOutcome::Destroyed; 9];
            want[0] = DestroyOutcome::TupleReused;
            assert_eq!(got, want);
            let left = diag
                .dump(ns.id, StateSet::from_iter([TcpState::CloseWait]))
                .expect("dump");
            assert!(left.is_empty(), "{left:?}");
            let err = (&pairs[0].server).write(b"x").expect_err("aborted");
            assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
            let err = (&est.server).read(&mut [0u8; 4]).expect_err("aborted");
            assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
            // Everything is gone now; the default batch size answers each one.
            let got = diag
                .destroy_many(&list.iter().collect::<Vec<_>>())
                .expect("destroy");
            assert_eq!(got, vec![DestroyOutcome::AlreadyGone; 9]);
        }

        /// Answers dropped by an overflowing receive buffer are reported as unknown
        /// (ENOBUFS), never as destroyed, and the socket stays usable.
        #[test]
        fn lost_acks_are_failures_not_successes() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            setsockopt(&diag.as_fd(), sockopt::RcvBuf, &1).expect("shrink SO_RCVBUF");
            let (_p, live) = close_wait(&ns, &mut diag, "127.0.0.1:0");
            let mut list: Vec<KernelSocket> = (1..=300u16)
                .map(|port| {
                    let mut s = live.clone();
                    s.remote.set_port(port); // no such connection
                    s
                })
                .collect();
            list.push(live.clone());
            let got = diag
                .destroy_batched(&list.iter().collect::<Vec<_>>(), list.len())
                .expect("destroy");
            assert_eq!(got.len(), 301);
            let lost = got
                .iter()
                .filter(|o| **o == DestroyOutcome::Failed(libc::ENOBUFS))
                .count();
            assert!(lost > 0, "the buffer did not overflow: {got:?}");
            assert!(got[..300].iter().all(|o| *o != DestroyOutcome::Destroyed));
            // The last request was carried out even if its answer was lost.
            assert!(matches!(
                got[300],
                DestroyOutcome::Destroyed | DestroyOutcome::Failed(libc::ENOBUFS)
            ));
            assert_eq!(diag.lookup(&live).expect("lookup after overflow"), None);
        }

        #[test]
        fn time_wait_timer_from_kernel() {
            let ns = TestNetns::new();
            let mut diag = open(&ns);
            let p = connected(&ns, "127.0.0.1:0", None);
            let local = p.client.local_addr().expect("a");
            drop(p.client);
            drop(p.server);
            let s = wait_for(&mut diag, &ns, TcpState::TimeWait, |s| s.local == local);
            let t = s.timer.expect("timer");
            assert_eq!(t.kind, TimerKind::TimeWait);
            assert!((50_000..=60_000).contains(&t.expires_ms), "{t:?}");
            assert_eq!(s.inode, Inode(0));
            assert_ne!(s.cookie, Cookie(0));
        }
    }
}

/// Manual benchmark: `cargo test --release --lib sys::netlink::bench -- --ignored --nocapture`
/// run inside a namespace holding a large CLOSE_WAIT fixture (e.g. via
/// `nsenter --net=/proc/PID/ns/net`). Set SOCKWARDEN_BENCH_DESTROY=1 to also destroy them all.
#[cfg(test)]
mod bench {
    use std::time::Instant;

    use super::*;

    fn vm_hwm_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "needs a large fixture in the current netns; run by hand"]
    fn dump_and_destroy_current_netns() {
        let own = crate::sys::netns::own_netns_id().expect("own netns");
        let mut diag = DiagSocket::open().expect("open");
        let close_wait = StateSet::from_iter([TcpState::CloseWait]);
        let hwm0 = vm_hwm_kib();
        let mut best = f64::MAX;
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let sockets = diag.dump(own, close_wait).expect("dump");
            best = best.min(t.elapsed().as_secs_f64());
            n = sockets.len();
        }
        println!(
            "dump: {n} CLOSE_WAIT sockets, best of 5 {:.3} s; VmHWM {} -> {} KiB",
            best,
            hwm0,
            vm_hwm_kib()
        );
        if std::env::var_os("SOCKWARDEN_BENCH_DESTROY").is_some() {
            let sockets = diag.dump(own, close_wait).expect("dump");
            let t = Instant::now();
            let outcomes = diag
                .destroy_many(&sockets.iter().collect::<Vec<_>>())
                .expect("destroy_many");
            let ok = outcomes
                .iter()
                .filter(|o| **o == DestroyOutcome::Destroyed)
                .count();
            println!(
                "destroy_many: {ok}/{} destroyed in {:.3} s (batch {}); VmHWM {} KiB",
                sockets.len(),
                t.elapsed().as_secs_f64(),
                diag.batch,
                vm_hwm_kib()
            );
        }
    }
}
