//! What the benchmarks share: a fixture of TCP sockets held by many processes in throwaway
//! network namespaces, and measuring a command run on it (wall time, CPU, peak RSS from
//! `wait4`, output lines).
//!
//! How the fixture is built: before any thread exists the bench forks one keeper process per
//! namespace that `unshare(CLONE_NEWNET)`s, brings `lo` up and sets `tcp_fin_timeout` to 1 s in
//! that namespace only, then forks the holders, which `setns` into their namespace (holder `i`
//! of P into namespace `i * K / P` of K: an even split). Each holder listens on
//! 127.0.0.1:(20000 + i); for every connection it connects a client bound to its own 127.x.y.z
//! address (no ephemeral port exhaustion) and accepts. For a CLOSE_WAIT fixture it then
//! `shutdown(SHUT_WR)`s the client and, in batches, waits until the clients are in FIN_WAIT_2
//! (FIN acknowledged) and closes them: the accepted side stays open forever in CLOSE_WAIT, and
//! the orphaned client expires silently after 1 s (a plain close could leave an orphan whose
//! timer RSTs the peer). For an ESTABLISHED fixture it keeps both ends open, untouched. Every
//! child has `PR_SET_PDEATHSIG(SIGKILL)`, so the holders, and with them the namespaces, go away
//! even if the bench is killed or interrupted.

#![allow(dead_code)] // each bench uses part of it

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, getpid, getppid, pipe, ForkResult, Pid};

/// First listener port; holder `i` listens on 127.0.0.1:(BASE_PORT + i).
const BASE_PORT: u16 = 20_000;
/// `tcp_fin_timeout` inside the bench namespace, so orphaned clients vanish quickly.
const FIN_TIMEOUT_SECS: u32 = 1;
/// A process may hold at most 20,000 open files here (hard limit); keep a margin.
pub const MAX_PER_HOLDER: usize = 19_000;
/// How long the orphaned FIN_WAIT_2 clients may take to expire.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// Kernel TCP states (include/net/tcp_states.h), as `tcpi_state` reports them.
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
/// Connections a holder opens before it waits for their FINs to be acknowledged; with the
/// held sockets it must stay under the 20,000 open files limit.
const BATCH: usize = 500;
/// How long one client may take to see its FIN acknowledged.
const FIN_ACK_LIMIT: Duration = Duration::from_secs(5);

pub type Res<T> = Result<T, String>;

/// Attaches "what failed" to any displayable error.
pub trait Context<T> {
    fn ctx(self, what: impl Display) -> Res<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// How big the fixture is.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub sockets: usize,
    pub processes: usize,
}

impl Sizes {
    /// What this machine allows.
    pub fn check(&self) -> Res<()> {
        if self.processes == 0 || self.sockets < self.processes {
            return Err("need --processes >= 1 and --sockets >= --processes".into());
        }
        if self.sockets.div_ceil(self.processes) > MAX_PER_HOLDER {
            return Err(format!(
                "at most {MAX_PER_HOLDER} sockets per process (20,000 open files limit): \
                 raise --processes"
            ));
        }
        if self.processes > 10_000 || self.sockets > 5_000_000 {
            return Err("at most 10,000 processes and 5,000,000 sockets".into());
        }
        Ok(())
    }
}

/// What the fixture's sockets are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The accepted side of each connection, in CLOSE_WAIT (its client closed and gone).
    CloseWait,
    /// Both ends of each connection, ESTABLISHED, held by the same process, never shut down.
    Established,
}

impl Kind {
    /// The state as `ss -tan` names it.
    pub fn ss_name(self) -> &'static str {
        match self {
            Kind::CloseWait => "CLOSE-WAIT",
            Kind::Established => "ESTAB",
        }
    }

    /// Sockets a holder keeps per connection.
    fn per_connection(self) -> usize {
        match self {
            Kind::CloseWait => 1,
            Kind::Established => 2,
        }
    }
}

/// A fixture spread over namespaces: `sockets` in the kind's state, all namespaces together,
/// held by `processes` holders split evenly over `namespaces` namespaces.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub sockets: usize,
    pub processes: usize,
    pub namespaces: usize,
    pub kind: Kind,
}

impl From<Sizes> for Layout {
    /// The fixture of the scan and destroy benches: CLOSE_WAIT in one namespace.
    fn from(sizes: Sizes) -> Layout {
        Layout {
            sockets: sizes.sockets,
            processes: sizes.processes,
            namespaces: 1,
            kind: Kind::CloseWait,
        }
    }
}

impl Layout {
    /// What this machine allows.
    pub fn check(&self) -> Res<()> {
        let per = self.kind.per_connection();
        if self.sockets % per != 0 {
            return Err(format!(
                "{} sockets cannot be {} connections' both ends: give an even number",
                self.sockets,
                self.kind.ss_name()
            ));
        }
        if self.processes == 0 || self.connections() < self.processes {
            return Err(format!(
                "need at least one process, and a connection for each ({} connections, {} processes)",
                self.connections(),
                self.processes
            ));
        }
        if self.namespaces == 0 || self.namespaces > self.processes {
            return Err(format!(
                "need 1 to {} namespaces (each needs a holder process), not {}",
                self.processes, self.namespaces
            ));
        }
        if self.connections().div_ceil(self.processes) * per > MAX_PER_HOLDER {
            return Err(format!(
                "at most {MAX_PER_HOLDER} sockets per process (20,000 open files limit): \
                 raise --processes"
            ));
        }
        if self.processes > 10_000 || self.connections() > 5_000_000 || self.namespaces > 2_000 {
            return Err(
                "at most 10,000 processes, 5,000,000 connections and 2,000 namespaces".into(),
            );
        }
        Ok(())
    }

    fn connections(&self) -> usize {
        self.sockets / self.kind.per_connection()
    }

    /// How many connections holder `i` makes (the remainder goes to the first holders).
    fn share(&self, i: usize) -> usize {
        let n = self.connections();
        n / self.processes + usize::from(i < n % self.processes)
    }

    /// Which namespace holder `i` lives in: an even split, in order.
    fn netns_of(&self, i: usize) -> usize {
        i * self.namespaces / self.processes
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// The running fixture: keepers owning the namespaces and the holders owning the sockets.
/// Dropping it kills them all (a namespace disappears with its last process).
pub struct Fixture {
    /// In the order of the holders they hold.
    pub namespaces: Vec<BenchNetns>,
    /// The first namespace's file (the only one, for a fixture in one namespace).
    pub netns: String,
    pub connect_time: Duration,
    pub settle_time: Duration,
    /// Sockets per state (ss's names), every namespace of the fixture together.
    pub states: BTreeMap<String, usize>,
}

/// One namespace of the fixture.
pub struct BenchNetns {
    /// `/proc/<keeper>/ns/net`.
    pub path: String,
    pub keeper: Pid,
    pub holders: Vec<Pid>,
    /// The namespace's inode number (`netns_inode` in `scan --json`).
    pub inode: u64,
    /// What `ss -tan` shows in it once settled: sockets in the fixture's state, listeners.
    pub sockets: usize,
    pub listeners: usize,
}

impl Fixture {
    /// How long the fixture took to build: its connections, then settling.
    pub fn build_time(&self) -> Duration {
        self.connect_time + self.settle_time
    }

    /// CLOSE_WAIT sockets in one namespace.
    pub fn build(args: &Sizes) -> Res<Fixture> {
        Fixture::build_layout(&Layout::from(*args))
    }

    /// The fixture `layout` describes.
    pub fn build_layout(layout: &Layout) -> Res<Fixture> {
        layout.check()?;
        ensure_single_threaded()?;
        let start = Instant::now();
        let mut fixture = Fixture {
            namespaces: Vec::with_capacity(layout.namespaces),
            netns: String::new(),
            connect_time: Duration::ZERO,
            settle_time: Duration::ZERO,
            states: BTreeMap::new(),
        };
        // On error the partly built fixture is dropped, which kills what was started.
        for _ in 0..layout.namespaces {
            let keeper = spawn_keeper()?;
            let path = format!("/proc/{keeper}/ns/net");
            fixture.namespaces.push(BenchNetns {
                path: path.clone(),
                keeper,
                holders: Vec::new(),
                inode: 0,
                sockets: 0,
                listeners: 0,
            });
            let inode = std::fs::metadata(&path).ctx(format!("stat {path}"))?.ino();
            if let Some(ns) = fixture.namespaces.last_mut() {
                ns.inode = inode;
            }
        }
        fixture.netns = fixture
            .namespaces
            .first()
            .map(|ns| ns.path.clone())
            .unwrap_or_default();
        fixture.spawn_holders(layout)?;
        fixture.connect_time = start.elapsed();
        for ns in &fixture.namespaces {
            let states = wait_settled(&ns.path, layout.kind.ss_name(), ns.sockets, ns.listeners)?;
            for (state, n) in states {
                *fixture.states.entry(state).or_insert(0) += n;
            }
        }
        fixture.settle_time = start.elapsed() - fixture.connect_time;
        Ok(fixture)
    }

    /// Forks the holders and waits for each to report that its sockets are built.
    fn spawn_holders(&mut self, layout: &Layout) -> Res<()> {
        let files = self
            .namespaces
            .iter()
            .map(|ns| File::open(&ns.path).ctx(format!("open {}", ns.path)))
            .collect::<Res<Vec<File>>>()?;
        let mut reports = Vec::with_capacity(layout.processes);
        let mut first_client = 0;
        for index in 0..layout.processes {
            let at = layout.netns_of(index);
            let netns = &files[at];
            // One pipe per holder: the write end lives only in that holder (the parent's copy
            // is dropped with the closure), so EOF means it reported or died.
            let (report_rx, report_tx) = pipe().ctx("pipe")?;
            let plan = HolderPlan {
                index,
                first_client,
                count: layout.share(index),
                kind: layout.kind,
            };
            first_client += plan.count;
            let sockets = plan.count * layout.kind.per_connection();
            let pid = fork_child(move || holder_main(&plan, netns, report_tx))?;
            let ns = &mut self.namespaces[at];
            ns.holders.push(pid);
            ns.sockets += sockets;
            ns.listeners += 1;
            reports.push(report_rx);
        }
        let errors: Vec<String> = reports
            .into_iter()
            .enumerate()
            .filter_map(|(index, rx)| read_report(index, rx).err())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("holders failed: {}", errors.join("; ")))
        }
    }

    /// Every process of the fixture: keepers first, then holders.
    fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        let keepers = self.namespaces.iter().map(|ns| ns.keeper);
        let holders = self
            .namespaces
            .iter()
            .flat_map(|ns| ns.holders.iter().copied());
        keepers.chain(holders)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Holders first, then the keepers, as before.
        let pids: Vec<Pid> = self.pids().collect();
        for &pid in pids.iter().rev() {
            // Best effort: these are our own children; ESRCH means already gone.
            let _ = kill(pid, Signal::SIGKILL);
        }
        for &pid in pids.iter().rev() {
            let _ = waitpid(pid, None);
        }
    }
}

/// fork() is only sound here while the process has a single thread.
pub fn ensure_single_threaded() -> Res<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .ctx("read /proc/self/task")?
        .count();
    if threads == 1 {
        Ok(())
    } else {
        Err(format!(
            "the bench must fork before starting threads, it has {threads}"
        ))
    }
}

/// Forks a child that runs `body` and never returns; the child dies with the bench.
fn fork_child(body: impl FnOnce() -> Res<()>) -> Res<Pid> {
    let parent = getpid();
    // Nothing buffered may be printed twice by the child.
    io::stdout().flush().ctx("flush stdout")?;
    // SAFETY: the bench is single-threaded (checked by ensure_single_threaded before the first
    // fork, and it starts no threads later), so the child may allocate and run normal code.
    match unsafe { fork() }.ctx("fork")? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = match die_with_parent(parent).and_then(|()| body()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("scan bench child {}: {e}", getpid());
                    1
                }
            };
            // SAFETY: _exit ends this forked child without running the parent's atexit
            // handlers or unwinding into the parent's stack frames.
            unsafe { libc::_exit(code) }
        }
    }
}

/// SIGKILL this child when the bench dies (ctrl-c, panic, kill): the namespace goes with it.
fn die_with_parent(parent: Pid) -> Res<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).ctx("prctl(PR_SET_PDEATHSIG)")?;
    if getppid() != parent {
        return Err("the bench exited before its child was set up".into());
    }
    Ok(())
}

/// Forks the keeper: it creates the namespace, configures it, reports and then waits forever.
fn spawn_keeper() -> Res<Pid> {
    let (ready_rx, ready_tx) = pipe().ctx("pipe")?;
    let keeper = fork_child(|| {
        setup_netns()?;
        let mut tx = File::from(ready_tx);
        tx.write_all(b"ok\n").ctx("report netns ready")?;
        drop(tx);
        park()
    })?;
    let mut reply = String::new();
    File::from(ready_rx)
        .read_to_string(&mut reply)
        .ctx("read from keeper")?;
    if reply.trim() == "ok" {
        Ok(keeper)
    } else {
        // Reap it; its own error went to stderr.
        let _ = kill(keeper, Signal::SIGKILL);
        let _ = waitpid(keeper, None);
        Err("the namespace keeper failed (see its error above; are you root?)".into())
    }
}

/// In the keeper: new network namespace, `lo` up, short `tcp_fin_timeout` in it only.
fn setup_netns() -> Res<()> {
    unshare(CloneFlags::CLONE_NEWNET).ctx("unshare(CLONE_NEWNET)")?;
    loopback_up().ctx("bring lo up (SIOCSIFFLAGS)")?;
    // /proc/sys/net is resolved against the opener's namespace: this changes the bench netns.
    let path = "/proc/sys/net/ipv4/tcp_fin_timeout";
    std::fs::write(path, format!("{FIN_TIMEOUT_SECS}\n")).ctx(format!("write {path}"))
}

/// `ip link set lo up`, with two ioctls on a throwaway socket.
fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data (a name array and a union of integers and sockaddrs);
    // all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid, NUL-terminated ifreq that lives across the call; the kernel
    // writes at most sizeof(ifreq) bytes into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; the kernel only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which sockets one holder builds.
struct HolderPlan {
    index: usize,
    /// Global index of its first client, which picks the client addresses.
    first_client: usize,
    /// Connections it makes.
    count: usize,
    kind: Kind,
}

/// In a holder: enter the namespace, build its sockets, report, hold them forever.
fn holder_main(plan: &HolderPlan, netns: &File, report: OwnedFd) -> Res<()> {
    let built = setns(netns, CloneFlags::CLONE_NEWNET)
        .ctx("setns(CLONE_NEWNET)")
        .and_then(|()| match plan.kind {
            Kind::CloseWait => hold_close_waits(plan),
            Kind::Established => hold_established(plan),
        });
    let mut tx = File::from(report);
    match built {
        Ok(held) => {
            tx.write_all(b"ok").ctx("report")?;
            drop(tx);
            let _held = held;
            park()
        }
        Err(e) => tx.write_all(e.as_bytes()).ctx("report"),
    }
}

/// Sleeps until killed (SIGKILL from the bench or from PDEATHSIG).
fn park() -> ! {
    loop {
        nix::unistd::pause();
    }
}

/// Builds `plan.count` CLOSE_WAIT sockets; returns them and the listener so the caller keeps
/// them open.
fn hold_close_waits(plan: &HolderPlan) -> Res<(TcpListener, Vec<TcpStream>)> {
    let port = BASE_PORT + u16::try_from(plan.index).ctx("holder index")?;
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let listener = TcpListener::bind(listen).ctx(format!("listen on {listen}"))?;
    let mut held = Vec::with_capacity(plan.count);
    let clients: Vec<usize> = (plan.first_client..plan.first_client + plan.count).collect();
    for batch in clients.chunks(BATCH) {
        close_wait_batch(&listener, listen, batch, &mut held)?;
    }
    Ok((listener, held))
}

/// Makes `plan.count` connections and returns both ends of each (and the listener), so the
/// caller keeps them ESTABLISHED.
fn hold_established(plan: &HolderPlan) -> Res<(TcpListener, Vec<TcpStream>)> {
    let port = BASE_PORT + u16::try_from(plan.index).ctx("holder index")?;
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let listener = TcpListener::bind(listen).ctx(format!("listen on {listen}"))?;
    let mut held = Vec::with_capacity(2 * plan.count);
    for k in plan.first_client..plan.first_client + plan.count {
        let addr = client_addr(k);
        let (client, server) =
            connect_pair(&listener, listen, addr).ctx(format!("connect {addr} -> {listen}"))?;
        held.push(client);
        held.push(server);
    }
    Ok((listener, held))
}

/// One batch of connections whose accepted sides end in CLOSE_WAIT, the stable way
/// (KERNEL-NOTES): every client sends its FIN with shutdown(SHUT_WR); once each FIN is
/// acknowledged (client in FIN_WAIT_2) the clients are closed. Their orphans sit in FIN_WAIT_2
/// for tcp_fin_timeout and leave without an RST. Batching because the peer delays the ACK of a
/// FIN by a few ms: waiting per connection would take minutes at 100,000.
fn close_wait_batch(
    listener: &TcpListener,
    listen: SocketAddrV4,
    batch: &[usize],
    held: &mut Vec<TcpStream>,
) -> Res<()> {
    let mut clients = Vec::with_capacity(batch.len());
    for &k in batch {
        let addr = client_addr(k);
        let (client, server) =
            connect_pair(listener, listen, addr).ctx(format!("connect {addr} -> {listen}"))?;
        client
            .shutdown(Shutdown::Write)
            .ctx(format!("shutdown(SHUT_WR) {addr} -> {listen}"))?;
        clients.push((addr, client));
        held.push(server);
    }
    for (addr, client) in &clients {
        wait_fin_acked(client).ctx(format!("FIN of {addr} -> {listen}"))?;
    }
    Ok(())
}

/// Client `k`'s own loopback address: 127.(10 + a / 256).(a % 256).(1..=254), a = k / 254.
fn client_addr(k: usize) -> Ipv4Addr {
    let (a, host) = (k / 254, k % 254 + 1);
    // Bounded by Sizes::check and Layout::check (at most 5,000,000 => a / 256 < 80).
    Ipv4Addr::new(127, (10 + a / 256) as u8, (a % 256) as u8, host as u8)
}

/// A connected (client, accepted server) pair, the client bound to its own address.
fn connect_pair(
    listener: &TcpListener,
    listen: SocketAddrV4,
    client: Ipv4Addr,
) -> io::Result<(TcpStream, TcpStream)> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(client, 0)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(listen))?;
    let (server, _) = listener.accept()?;
    Ok((TcpStream::from(fd), server))
}

/// Waits until the client's FIN is acknowledged (its state is FIN_WAIT_2).
fn wait_fin_acked(client: &TcpStream) -> io::Result<()> {
    let deadline = Instant::now() + FIN_ACK_LIMIT;
    loop {
        match tcp_state(client)? {
            TCP_FIN_WAIT2 => return Ok(()),
            TCP_FIN_WAIT1 if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(50));
            }
            s => {
                return Err(io::Error::other(format!(
                    "client in TCP state {s} after shutdown, expected FIN_WAIT_2 (5)"
                )))
            }
        }
    }
}

/// `tcpi_state` from getsockopt(TCP_INFO).
fn tcp_state(sock: &TcpStream) -> io::Result<u8> {
    // SAFETY: tcp_info is plain old data; all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` is the size of `info`; the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_state)
}

/// Reads holder `index`'s report: "ok", or its error; nothing means it died.
fn read_report(index: usize, rx: OwnedFd) -> Res<()> {
    let mut text = String::new();
    File::from(rx)
        .read_to_string(&mut text)
        .ctx(format!("read holder {index}'s report"))?;
    match text.as_str() {
        "ok" => Ok(()),
        "" => Err(format!(
            "holder {index} died without reporting (see stderr)"
        )),
        e => Err(format!("holder {index}: {e}")),
    }
}

/// Polls `ss -Htan` in the namespace until only the sockets in `state` (ss's name) and the
/// listeners are left (the orphaned clients of a CLOSE_WAIT fixture expire after
/// tcp_fin_timeout), then checks their counts. A dump taken while sockets vanish may skip some
/// (the kernel resumes a dump by position in a hash chain), so counts are only trusted once
/// nothing else is left, and a mismatch must be seen twice in a row.
fn wait_settled(
    netns: &str,
    state: &str,
    sockets: usize,
    listeners: usize,
) -> Res<BTreeMap<String, usize>> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut mismatches = 0;
    loop {
        let states = ss_states(netns)?;
        let get = |s: &str| states.get(s).copied().unwrap_or(0);
        let (held, listen) = (get(state), get("LISTEN"));
        let settled = states.values().sum::<usize>() == held + listen;
        if settled && held == sockets && listen == listeners {
            return Ok(states);
        }
        if settled {
            mismatches += 1;
            if mismatches == 2 {
                return Err(format!(
                    "expected {sockets} {state} and {listeners} LISTEN in {netns}, \
                     ss -tan shows {states:?}"
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{netns} did not settle in {SETTLE_LIMIT:?}: {states:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Socket count per state (ss's names) in the namespace. Streams the output: buffering
/// 100,000 lines would raise the bench's own peak RSS, which wait4 folds into every row.
pub fn ss_states(netns: &str) -> Res<BTreeMap<String, usize>> {
    let mut child = in_netns(netns, &["ss", "-Htan"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .ctx("run nsenter ss -Htan")?;
    let mut states = BTreeMap::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.ctx("read ss -Htan")?;
            if let Some(state) = line.split_whitespace().next() {
                *states.entry(state.to_string()).or_insert(0) += 1;
            }
        }
    }
    let status = child.wait().ctx("wait for ss -Htan")?;
    if !status.success() {
        return Err(format!("nsenter ss -Htan: {status}"));
    }
    Ok(states)
}

/// `nsenter --net=NETNS argv…`: nsenter execs the command, so wait4's rusage is the command's.
pub fn in_netns(netns: &str, argv: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={netns}")).args(argv);
    cmd
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

/// Figures of one run.
#[derive(Clone, Copy)]
pub struct Run {
    pub wall: Duration,
    /// User + system CPU time of the command.
    pub cpu: Duration,
    pub maxrss_kib: i64,
    pub lines: usize,
}

/// A child's ru_maxrss includes the peak RSS of the process image it exec'd from, i.e. this
/// bench's (std spawns with vfork semantics): reset our peak to what we use now. Best effort.
pub fn reset_own_peak_rss() {
    // "5" resets the peak resident set size (proc(5), /proc/pid/clear_refs).
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("note: could not reset the bench's peak RSS: {e}");
    }
}

/// `program args` started with its stdout piped and its stderr in `stderr_path`, and when.
fn spawn_piped(
    program: &str,
    args: &[String],
    stderr_path: &Path,
) -> Res<(std::process::Child, Instant)> {
    let stderr = File::create(stderr_path).ctx(format!("create {}", stderr_path.display()))?;
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .ctx(format!("spawn {program}"))?;
    Ok((child, start))
}

/// Spawns `program args`, counts its stdout lines through a pipe (discarding the bytes), and
/// reaps it with wait4 for its CPU time and peak RSS.
pub fn run_once(program: &str, args: &[String], stderr_path: &Path) -> Res<(Run, ExitStatus)> {
    let (mut child, start) = spawn_piped(program, args, stderr_path)?;
    let lines = child
        .stdout
        .take()
        .map(count_lines)
        .transpose()
        .ctx("read stdout")?
        .unwrap_or(0);
    let (status, rusage) = wait4(child.id())?;
    let wall = start.elapsed();
    let run = Run {
        wall,
        cpu: cpu_of(&rusage),
        maxrss_kib: rusage.ru_maxrss,
        lines,
    };
    Ok((run, status))
}

/// Like [`run_once`], but hands `on_line` every stdout line (without its newline) and counts
/// them.
pub fn run_lines(
    program: &str,
    args: &[String],
    stderr_path: &Path,
    on_line: &mut dyn FnMut(&[u8]),
) -> Res<(Run, ExitStatus)> {
    let (mut child, start) = spawn_piped(program, args, stderr_path)?;
    let mut lines = 0;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    lines += 1;
                    on_line(line.strip_suffix(b"\n").unwrap_or(&line));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Reap it before saying why (it may be blocked on the full pipe: kill it).
                    let _ = child.kill();
                    let _ = wait4(child.id());
                    return Err(format!("read the stdout of {program}: {e}"));
                }
            }
        }
    }
    let (status, rusage) = wait4(child.id())?;
    let run = Run {
        wall: start.elapsed(),
        cpu: cpu_of(&rusage),
        maxrss_kib: rusage.ru_maxrss,
        lines,
    };
    Ok((run, status))
}

/// User plus system time of a rusage.
pub fn cpu_of(r: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(r.ru_utime) + tv(r.ru_stime)
}

pub fn count_lines(mut reader: impl Read) -> io::Result<usize> {
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reaps `pid` and returns its exit status and resource usage (ru_maxrss in KiB).
pub fn wait4(pid: u32) -> Res<(ExitStatus, libc::rusage)> {
    let pid = libc::pid_t::try_from(pid).ctx("pid")?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for writes for the duration of the call; `pid`
        // is our own unreaped child (std's Child never waited for it).
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {err}"));
        }
    }
}

pub fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}

/// Summary of a measured row.
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median CPU seconds.
    pub cpu: f64,
    pub peak_mib: f64,
    pub lines: usize,
    pub lines_stable: bool,
}

impl Stats {
    pub fn of(runs: &[Run]) -> Stats {
        let mut secs: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64()).collect();
        secs.sort_by(f64::total_cmp);
        let mid = secs.len() / 2;
        let median = if secs.len() % 2 == 1 {
            secs[mid]
        } else {
            (secs[mid - 1] + secs[mid]) / 2.0
        };
        let peak_kib = runs.iter().map(|r| r.maxrss_kib).max().unwrap_or(0);
        let mut cpus: Vec<f64> = runs.iter().map(|r| r.cpu.as_secs_f64()).collect();
        cpus.sort_by(f64::total_cmp);
        let lines = runs.first().map_or(0, |r| r.lines);
        Stats {
            median,
            min: secs.first().copied().unwrap_or(0.0),
            max: secs.last().copied().unwrap_or(0.0),
            cpu: cpus.get(cpus.len() / 2).copied().unwrap_or(0.0),
            peak_mib: peak_kib as f64 / 1024.0,
            lines,
            lines_stable: runs.iter().all(|r| r.lines == lines),
        }
    }
}

/// A /proc file's text on one line, for the report header.
pub fn proc_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Busy and total CPU time of the whole machine so far (`/proc/stat`'s first line, ticks).
fn cpu_ticks() -> Option<(u64, u64)> {
    let line = proc_line("/proc/stat");
    let fields: Vec<u64> = line
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Wait (at most `limit`) until the machine is quiet: under 10% of its CPUs busy over
/// 200 ms, so that a fixture's teardown or build (the kernel frees 100,000 sockets in a
/// worker) is not measured as part of the next run. Returns how busy the last sample was.
pub fn wait_quiet(limit: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let Some((busy0, total0)) = cpu_ticks() else {
            return f64::NAN;
        };
        std::thread::sleep(Duration::from_millis(200));
        let Some((busy1, total1)) = cpu_ticks() else {
            return f64::NAN;
        };
        let busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
        if busy < 0.10 || started.elapsed() >= limit {
            return busy;
        }
    }
}

/// The 1, 5 and 15 minute load averages: the machine is shared, and load inflates figures.
pub fn load_average() -> String {
    let line = proc_line("/proc/loadavg");
    line.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `SOCKWARDEN_BENCH_WRAP="perf record -g -o /tmp/clean.perf --"` runs sockwarden under a
/// profiler (figures are then the profiler's too).
pub fn wrapped((program, argv): (String, Vec<String>)) -> (String, Vec<String>) {
    let Ok(wrap) = std::env::var("SOCKWARDEN_BENCH_WRAP") else {
        return (program, argv);
    };
    let mut words = wrap.split_whitespace().map(String::from);
    let Some(first) = words.next() else {
        return (program, argv);
    };
    (first, words.chain([program]).chain(argv).collect())
}
