//! Sockets in every state sockwarden watches, made on loopback inside a test namespace and
//! held by the test process so that they stay in that state for the test's length:
//! close-wait, fin-wait-1, fin-wait-2, last-ack, closing, syn-sent, and a syn-recv request.
//!
//! A FIN stays unsent (so its socket stays in FIN_WAIT_1, LAST_ACK or CLOSING) when data is
//! queued ahead of it that the peer's zero window holds back: the peer never reads.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{run_ok, TestNetns};

/// One socket of the fixture in a watched state, held by the test.
pub struct Held {
    pub state: &'static str,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    fd: OwnedFd,
}

impl Held {
    fn new(state: &'static str, fd: OwnedFd, remote: SocketAddr) -> Held {
        let sock = std::mem::ManuallyDrop::new(
            // SAFETY: borrowed only to read its address; ManuallyDrop keeps it open.
            unsafe { TcpListener::from_raw_fd(fd.as_raw_fd()) },
        );
        Held {
            state,
            local: sock.local_addr().expect("local"),
            remote,
            fd,
        }
    }

    fn stream(state: &'static str, s: TcpStream) -> Held {
        let remote = s.peer_addr().expect("peer");
        Held::new(state, s.into(), remote)
    }
}

/// Every state, in one namespace; dropping it closes them all.
pub struct EveryState {
    /// The sockets in a watched state that the test holds.
    pub held: Vec<Held>,
    /// Their peers and listeners, kept open.
    keep: Vec<OwnedFd>,
}

impl EveryState {
    /// Make them in `ns`, on IPv4 and (with `v6`) IPv6. With `request`, also a SYN_RECV
    /// request socket (see [`syn_recv_request`]).
    pub fn new(ns: &TestNetns, v6: bool, request: bool) -> EveryState {
        let mut fixture = EveryState {
            held: Vec::new(),
            keep: Vec::new(),
        };
        let mut binds = vec!["127.0.0.1:0"];
        if v6 {
            binds.push("[::1]:0");
        }
        for bind in binds {
            let made = ns.enter(move || every_state_on(bind));
            fixture.held.extend(made.held);
            fixture.keep.extend(made.keep);
        }
        if request {
            // One end of a veth pair whose other end stays down (so whatever is sent on
            // it is dropped), with the listener's address, and the route to the SYN's
            // source through it.
            let ip = |args: &[&str]| {
                run_ok(
                    Command::new("nsenter")
                        .arg(format!("--net={}", ns.path().display()))
                        .arg("ip")
                        .args(args),
                );
            };
            ip(&[
                "link", "add", "sw-a", "type", "veth", "peer", "name", "sw-b",
            ]);
            ip(&["addr", "add", "198.51.100.1/24", "dev", "sw-a"]);
            ip(&["link", "set", "sw-a", "up"]);
            ip(&["route", "add", "192.0.2.0/24", "dev", "sw-a"]);
            ip(&[
                "neigh",
                "add",
                "192.0.2.1",
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                "sw-a",
                "nud",
                "permanent",
            ]);
            fixture.keep.push(ns.enter(syn_recv_request));
        }
        fixture
    }

    /// Shut down the held sockets in `state` (their peers stay open): each leaves its state.
    pub fn shut_down(&mut self, state: &str) {
        self.held.retain(|held| {
            if held.state != state {
                return true;
            }
            // SAFETY: shutdown on a descriptor this fixture owns.
            unsafe { libc::shutdown(held.fd.as_raw_fd(), libc::SHUT_RDWR) };
            false
        });
    }
}

fn every_state_on(bind: &'static str) -> EveryState {
    let mut held = Vec::new();
    let mut keep: Vec<OwnedFd> = Vec::new();
    let listener = TcpListener::bind(bind).expect("bind");

    // CLOSE_WAIT: the peer shut its side down; the test never closes.
    let (client, server) = pair(&listener);
    client.shutdown(Shutdown::Write).expect("shutdown");
    wait_for(&server, TCP_CLOSE_WAIT);
    held.push(Held::stream("close-wait", server));
    keep.push(client.into());

    // FIN_WAIT_2: the test shut its side down; the peer never does.
    let (client, server) = pair(&listener);
    client.shutdown(Shutdown::Write).expect("shutdown");
    wait_for(&client, TCP_FIN_WAIT2);
    held.push(Held::stream("fin-wait-2", client));
    keep.push(server.into());

    // FIN_WAIT_1: data the peer never reads fills its window; the FIN waits behind it.
    let (client, server) = pair(&listener);
    fill(&client);
    client.shutdown(Shutdown::Write).expect("shutdown");
    wait_for(&client, TCP_FIN_WAIT1);
    held.push(Held::stream("fin-wait-1", client));
    keep.push(server.into());

    // LAST_ACK: in CLOSE_WAIT, the test fills the peer's window, then shuts down.
    let (client, server) = pair(&listener);
    fill(&server);
    client.shutdown(Shutdown::Write).expect("shutdown");
    wait_for(&server, TCP_CLOSE_WAIT);
    server.shutdown(Shutdown::Write).expect("shutdown");
    wait_for(&server, TCP_LAST_ACK);
    held.push(Held::stream("last-ack", server));
    keep.push(client.into());

    // CLOSING: both fill each other's window and shut down; one then reads everything,
    // the other's FIN with it, while its own FIN still waits.
    let (a, b) = pair(&listener);
    fill(&a);
    fill(&b);
    a.shutdown(Shutdown::Write).expect("shutdown");
    b.shutdown(Shutdown::Write).expect("shutdown");
    read_to_eof(&a);
    wait_for(&a, TCP_CLOSING);
    held.push(Held::stream("closing", a));
    keep.push(b.into());

    // SYN_SENT: a listener whose accept queue is full drops the SYN; the client retries.
    // One bound first (its port known when it entered SYN_SENT), one not.
    let full = listen_backlog_0(bind);
    let queued = TcpStream::connect(local(&full)).expect("connect the queued one");
    for bound in [true, false] {
        held.push(Held::new(
            "syn-sent",
            syn_sent(local(&full), bound),
            local(&full),
        ));
    }
    keep.push(full);
    keep.push(queued.into());
    keep.push(listener.into());
    EveryState { held, keep }
}

const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;
const TCP_SYN_SENT: u8 = 2;

/// A connected pair on `listener`: (client, server), with small buffers so a window fills
/// after a few KiB.
fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    for s in [&client, &server] {
        set_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4096);
    }
    (client, server)
}

/// Write until the peer's window and our send buffer are full.
fn fill(s: &TcpStream) {
    s.set_nonblocking(true).expect("nonblocking");
    let chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet_since = None;
    loop {
        match (&*s).write(&chunk) {
            Ok(_) => quiet_since = None,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Full once it stays full (the peer's ACKs may open room a moment later).
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(100) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("fill: {e}"),
        }
        assert!(Instant::now() < deadline, "the window never filled");
    }
    s.set_nonblocking(false).expect("blocking");
}

fn read_to_eof(s: &TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 65536];
    while (&*s).read(&mut buf).expect("read to the peer's FIN") > 0 {}
}

fn wait_for(s: &TcpStream, state: u8) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_state(s.as_raw_fd()) != Some(state) {
        assert!(
            Instant::now() < deadline,
            "socket stuck in state {:?}, waiting for {state}",
            tcp_state(s.as_raw_fd())
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn tcp_state(fd: i32) -> Option<u8> {
    // SAFETY: tcp_info is plain old data; all-zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which lives for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.tcpi_state)
}

fn set_int(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: setsockopt reads an int from a live local for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn tcp_socket(family: i32) -> OwnedFd {
    // SAFETY: socket(2) has no memory preconditions.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn family_of(addr: SocketAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A listener with a backlog of 0: its accept queue is full after one connection.
fn listen_backlog_0(bind: &str) -> OwnedFd {
    let addr: SocketAddr = bind.parse().expect("bind address");
    let fd = tcp_socket(family_of(addr));
    let (sa, len) = sockaddr_of(addr);
    // SAFETY: bind/listen on our fresh socket with a valid address for its length.
    unsafe {
        assert_eq!(
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_storage).cast(),
                len
            ),
            0
        );
        assert_eq!(libc::listen(fd.as_raw_fd(), 0), 0);
    }
    fd
}

fn local(fd: &OwnedFd) -> SocketAddr {
    let sock = std::mem::ManuallyDrop::new(
        // SAFETY: borrowed only to read its address; ManuallyDrop keeps it from closing.
        unsafe { TcpListener::from_raw_fd(fd.as_raw_fd()) },
    );
    sock.local_addr().expect("local addr")
}

/// A nonblocking connect to `to` that stays in SYN_SENT (its SYNs are dropped).
fn syn_sent(to: SocketAddr, bound: bool) -> OwnedFd {
    let fd = tcp_socket(family_of(to));
    if bound {
        let any = match to {
            SocketAddr::V4(_) => "127.0.0.1:0",
            SocketAddr::V6(_) => "[::1]:0",
        };
        let (sa, len) = sockaddr_of(any.parse().expect("addr"));
        // SAFETY: bind on our fresh socket with a valid address for its length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let (sa, len) = sockaddr_of(to);
    // SAFETY: connect on our fresh socket with a valid address for its length.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        rc == -1 && err.raw_os_error() == Some(libc::EINPROGRESS),
        "connect: {err}"
    );
    // The SYN went out and was dropped: still SYN_SENT a moment later.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        tcp_state(fd.as_raw_fd()),
        Some(TCP_SYN_SENT),
        "not in SYN_SENT"
    );
    fd
}

/// A SYN_RECV request socket: a SYN, sent by a raw socket from 192.0.2.1 (where nothing
/// is), to a listener on the namespace's veth end, whose peer is down; the handshake never
/// completes, and the SYN-ACK is retransmitted after a second, then two more, and so on.
/// Nothing leaves the namespace: the SYN is delivered locally, and the SYN-ACKs are
/// dropped at the veth pair, both of whose ends are in it. Returns the listener (the request lives as
/// long as it and its retransmissions, about a minute).
fn syn_recv_request() -> OwnedFd {
    let dst = Ipv4Addr::new(198, 51, 100, 1);
    let listener = TcpListener::bind((dst, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let src = Ipv4Addr::new(192, 0, 2, 1);
    let sport: u16 = 40_000;
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]); // zero, TCP, TCP length
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&tcp);
    // SAFETY: socket(2) has no memory preconditions; IPPROTO_RAW implies IP_HDRINCL.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(raw >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptor, owned here.
    let raw = unsafe { OwnedFd::from_raw_fd(raw) };
    let (sa, len) = sockaddr_of(SocketAddr::new(dst.into(), 0));
    // SAFETY: sendto with a buffer and address that live for the call.
    let sent = unsafe {
        libc::sendto(
            raw.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    assert_eq!(
        sent,
        40,
        "send the SYN: {}",
        std::io::Error::last_os_error()
    );
    OwnedFd::from(listener)
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
