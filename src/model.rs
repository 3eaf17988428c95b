//! The vocabulary shared by every layer: ids that must not be mixed, TCP states, the
//! sockets the kernel reports, the processes that own them, and how old they are.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The kernel's 64-bit socket cookie: unique per socket for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cookie(pub u64);

/// A sockfs inode number (`socket:[N]` in `/proc/<pid>/fd`); 0 for orphans and minisockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Inode(pub u64);

/// How maps and sets keyed by the kernel's numbers (inodes, cookies, process ids) hash: a
/// mass leak looks 100,000 of them up in each pass, and SipHash's guard against chosen
/// keys is not needed for numbers the kernel hands out (the seed is still random).
pub type NumberHash = foldhash::fast::RandomState;

/// A set of socket inodes.
pub type InodeSet = std::collections::HashSet<Inode, NumberHash>;

/// A map from socket inodes.
pub type InodeMap<V> = std::collections::HashMap<Inode, V, NumberHash>;

/// A process id in the host pid namespace. Never used alone to act: see [`ProcessId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pid(pub i32);

/// A process as an identity that survives pid reuse: pid plus start time
/// (`/proc/<pid>/stat` field 22, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: Pid,
    pub start_time: u64,
}

/// A network namespace's identity: device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub inode: u64,
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Pid {
    /// This process.
    pub fn own() -> Pid {
        Pid(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.inode)
    }
}

/// A network namespace as the scan found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Netns {
    pub id: NetnsId,
    /// Readable name: `host` (the namespace sockwarden runs in), a `/run/netns` name, or
    /// `pid:<PID>(<comm>)` for a namespace only reachable through a process.
    pub name: String,
    /// A path that opens this namespace (`/run/netns/NAME` or `/proc/<pid>/ns/net`).
    pub path: std::path::PathBuf,
    /// What it belongs to, by names that outlive its processes (the metrics' labels).
    #[serde(skip)]
    pub origin: NetnsOrigin,
}

impl Netns {
    /// A namespace whose name is also stable (`host`, a `/run/netns` name, a path given).
    pub fn new(id: NetnsId, name: impl Into<String>, path: impl Into<std::path::PathBuf>) -> Netns {
        let name = name.into();
        Netns {
            id,
            origin: NetnsOrigin {
                label: name.clone(),
                ..NetnsOrigin::default()
            },
            name,
            path: path.into(),
        }
    }

    /// A namespace known only by its id (not dumped): named by its inode, no path.
    pub fn unnamed(id: NetnsId) -> Netns {
        let mut netns = Netns::new(id, id.to_string(), std::path::PathBuf::new());
        netns.origin.label = NetnsOrigin::OTHER.into();
        netns
    }
}

/// What a network namespace belongs to, named by what survives restarts of the agent and
/// of the namespace's processes: never a pid. These are the metrics' labels, so their set
/// is bounded by the node's pods, containers and units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsOrigin {
    /// `host`, a `/run/netns` name, `node` (PID 1's, seen from a pod), `pod:<uid>`,
    /// `container:<id>`, `unit:<systemd unit>`, or `other`.
    pub label: String,
    /// The Kubernetes pod, from the cgroup path of the namespace's first process.
    pub pod_uid: Option<String>,
    /// The container, likewise (12 hex digits).
    pub container: Option<String>,
}

impl NetnsOrigin {
    /// The label of a namespace nothing stable names.
    pub const OTHER: &'static str = "other";
}

/// Address family of a TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    #[serde(rename = "fin-wait-1")]
    FinWait1 = 4,
    #[serde(rename = "fin-wait-2")]
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The states `scan` shows when no `--state` is given: teardown states that can get stuck.
    pub const DEFAULT_STUCK: [TcpState; 7] = [
        TcpState::CloseWait,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::LastAck,
        TcpState::Closing,
        TcpState::SynSent,
        TcpState::SynRecv,
    ];

    pub fn from_kernel(n: u8) -> Option<TcpState> {
        TcpState::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    pub fn kernel_number(self) -> u8 {
        self as u8
    }

    /// The kebab-case name used on the command line, in policies and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv => "syn-recv",
            TcpState::FinWait1 => "fin-wait-1",
            TcpState::FinWait2 => "fin-wait-2",
            TcpState::TimeWait => "time-wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
            TcpState::NewSynRecv => "new-syn-recv",
        }
    }
}

impl Serialize for StateSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(TcpState::name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_the_cli_names() {
        for state in TcpState::ALL {
            let json = serde_json::to_string(&state).expect("serialize");
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(
                serde_json::from_str::<TcpState>(&json).expect("deserialize"),
                state
            );
            assert_eq!(state.name().parse::<TcpState>().expect("parse"), state);
        }
    }

    #[test]
    fn ss_spellings_are_accepted() {
        for (text, state) in [
            ("CLOSE-WAIT", TcpState::CloseWait),
            ("fin_wait2", TcpState::FinWait2),
            ("FIN-WAIT-1", TcpState::FinWait1),
            ("syn-recv", TcpState::SynRecv),
        ] {
            assert_eq!(text.parse::<TcpState>().expect(text), state);
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown state name, with the list of names that are accepted.
#[derive(Debug, thiserror::Error)]
#[error("unknown TCP state `{0}`; expected one of: all, {names}", names = TcpState::ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownState(pub String);

impl FromStr for TcpState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        // Accept the spellings people paste from `ss` too: FIN-WAIT-1 / fin-wait1 / CLOSE-WAIT.
        TcpState::ALL
            .into_iter()
            .find(|st| st.name() == wanted || st.name().replace('-', "") == wanted.replace('-', ""))
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// A set of TCP states as the kernel's `idiag_states` bitmask (bit `1 << state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateSet(u32);

impl StateSet {
    pub fn empty() -> StateSet {
        StateSet(0)
    }
    pub fn all() -> StateSet {
        TcpState::ALL.into_iter().collect()
    }
    pub fn default_stuck() -> StateSet {
        TcpState::DEFAULT_STUCK.into_iter().collect()
    }
    pub fn insert(&mut self, s: TcpState) {
        self.0 |= 1 << s.kernel_number();
    }
    pub fn contains(self, s: TcpState) -> bool {
        self.0 & (1 << s.kernel_number()) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The bitmask to put in `idiag_states`. SYN_RECV request sockets are NEW_SYN_RECV in
    /// the kernel, so asking for one asks for both.
    pub fn kernel_mask(self) -> u32 {
        let mut mask = self.0;
        if self.contains(TcpState::SynRecv) || self.contains(TcpState::NewSynRecv) {
            mask |= (1 << TcpState::SynRecv as u32) | (1 << TcpState::NewSynRecv as u32);
        }
        mask
    }
    pub fn iter(self) -> impl Iterator<Item = TcpState> {
        TcpState::ALL.into_iter().filter(move |s| self.contains(*s))
    }
    /// Whether a dump for this set returns sockets in `s` ([`StateSet::kernel_mask`]).
    pub fn asks_for(self, s: TcpState) -> bool {
        StateSet(self.kernel_mask()).contains(s)
    }
}

/// `close-wait,fin-wait-2`; `none` when empty.
impl fmt::Display for StateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(TcpState::name).collect();
        f.write_str(&names.join(","))
    }
}

impl FromIterator<TcpState> for StateSet {
    fn from_iter<I: IntoIterator<Item = TcpState>>(iter: I) -> Self {
        let mut set = StateSet::empty();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

/// Which kernel timer is pending on a socket (`idiag_timer`), with `idiag_expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    Retransmit,
    Keepalive,
    /// TIME_WAIT, or the FIN_WAIT2 timer of an orphaned (timewait minisocket) FIN_WAIT2.
    TimeWait,
    ZeroWindowProbe,
    /// SYN-ACK retransmit of a request socket (idiag_timer 1 on a minisocket).
    Other(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timer {
    pub kind: TimerKind,
    pub expires_ms: u64,
    pub retransmits: u8,
}

/// The `tcp_info` fields the age estimate uses: milliseconds since each event (u32, wraps
/// after ~49.7 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct TcpTimes {
    pub last_data_sent_ms: u32,
    pub last_ack_recv_ms: u32,
    pub last_data_recv_ms: u32,
}

/// One TCP socket as sock_diag reported it. Enough to print it, age it and destroy it by
/// its full id (addresses, ports, interface and cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSocket {
    pub netns: NetnsId,
    pub family: Family,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `idiag_if` from the socket id; needed to address link-local sockets on destroy.
    pub interface: u32,
    pub cookie: Cookie,
    pub inode: Inode,
    pub uid: u32,
    pub recv_q: u32,
    pub send_q: u32,
    pub timer: Option<Timer>,
    /// Present for full sockets when `INET_DIAG_INFO` was asked for; absent on minisockets.
    pub tcp: Option<TcpTimes>,
}

/// An open handle on a process taken when it was read (a pidfd): it refers to that very
/// process and no other, even after its pid is reused, so an action decided on what was
/// read goes to the process that was read. Opaque outside `sys/`; not part of a process's
/// identity (that is [`ProcessId`]), so never compared or serialized.
#[derive(Clone, Default)]
pub struct ProcessHandle(Option<Arc<std::os::fd::OwnedFd>>);

impl ProcessHandle {
    pub fn new(pidfd: std::os::fd::OwnedFd) -> ProcessHandle {
        ProcessHandle(Some(Arc::new(pidfd)))
    }

    /// No handle (not taken, or the kernel has no pidfds): such a process is never signalled.
    pub fn none() -> ProcessHandle {
        ProcessHandle(None)
    }

    pub fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.0.as_deref().map(|fd| fd.as_fd())
    }
}

impl PartialEq for ProcessHandle {
    fn eq(&self, _: &ProcessHandle) -> bool {
        true
    }
}

impl Eq for ProcessHandle {}

impl fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "pidfd"
        } else {
            "no pidfd"
        })
    }
}

/// A process that holds sockets, read once per scan from `/proc/<pid>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub id: ProcessId,
    /// `comm` (the kernel's 15-character command name).
    pub comm: String,
    /// Full command line, arguments joined by spaces.
    pub cmdline: String,
    /// Path of the executable when readable.
    pub exe: Option<String>,
    /// Effective uid.
    pub uid: u32,
    /// The systemd unit (`NAME.service`, `NAME.scope`) from `/proc/<pid>/cgroup`.
    pub unit: Option<String>,
    /// A container id when the cgroup path names one (docker, containerd, cri-o, podman).
    pub container: Option<String>,
    /// The pidfd taken as it was read: actions on this process go through it.
    #[serde(skip)]
    pub handle: ProcessHandle,
}

/// One holder of a socket: a process and the fd number it holds the socket under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub process: Arc<Process>,
    pub fd: i32,
}

/// Where an age figure came from, best evidence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgeSource {
    /// A kernel timer whose full length is known (TIME_WAIT, orphaned FIN_WAIT2): exact.
    KernelTimer,
    /// The moment the kernel moved the socket into its state, recorded by sockwarden's
    /// eBPF program on the `inet_sock_set_state` tracepoint: exact.
    KernelTransition,
    /// `tcp_info` "ms since last ACK/data": exact for a silent socket, else a lower bound.
    TcpInfo,
    /// First time sockwarden saw this cookie in this state: a lower bound.
    Observed,
}

impl AgeSource {
    pub fn name(self) -> &'static str {
        match self {
            AgeSource::KernelTimer => "kernel-timer",
            AgeSource::KernelTransition => "kernel-transition",
            AgeSource::TcpInfo => "tcp-info",
            AgeSource::Observed => "observed",
        }
    }
}

/// How long a socket has been in its state, and by what evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Age {
    pub secs: u64,
    pub source: AgeSource,
    /// True when the socket may be older than `secs` (observation, or tcp_info on a socket
    /// that may have seen traffic since entering its state).
    pub lower_bound: bool,
}

/// A socket in a state of interest, attributed to its owners and aged.
#[derive(Debug, Clone)]
pub struct StuckSocket {
    pub socket: KernelSocket,
    pub owners: Owners,
    pub age: Age,
}

impl StuckSocket {
    /// (namespace, cookie, state): the socket in its state, across passes.
    pub fn key(&self) -> (NetnsId, Cookie, TcpState) {
        (self.socket.netns, self.socket.cookie, self.socket.state)
    }
}

/// The holders of a socket: none (an orphan), usually one, kept inline (a mass leak has
/// 100,000 sockets, each otherwise a heap block of its own), or several after a fork.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Owners {
    #[default]
    None,
    One([Owner; 1]),
    Many(Vec<Owner>),
}

impl std::ops::Deref for Owners {
    type Target = [Owner];
    fn deref(&self) -> &[Owner] {
        match self {
            Owners::None => &[],
            Owners::One(one) => one,
            Owners::Many(many) => many,
        }
    }
}

impl<'a> IntoIterator for &'a Owners {
    type Item = &'a Owner;
    type IntoIter = std::slice::Iter<'a, Owner>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<Owner> for Owners {
    fn from_iter<I: IntoIterator<Item = Owner>>(iter: I) -> Owners {
        iter.into_iter().collect::<Vec<Owner>>().into()
    }
}

impl From<Vec<Owner>> for Owners {
    fn from(mut owners: Vec<Owner>) -> Owners {
        match owners.len() {
            0 => Owners::None,
            1 => match owners.pop() {
                Some(one) => Owners::One([one]),
                None => Owners::None,
            },
            _ => Owners::Many(owners),
        }
    }
}
