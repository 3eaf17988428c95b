//! The kernel boundary. Everything that asks the kernel about the sockets and processes
//! sockwarden watches, or acts on them — netlink, `/proc`, namespaces, pidfds, signals,
//! D-Bus, and the probes of what this machine allows — lives under `sys/`; the layers above
//! (scan, engine, actions, daemon, doctor) see only the [`System`] trait, so they are tested
//! without root through [`fake::FakeSystem`]. The agent's own files (the audit trail, its
//! state) are opened through [`files`]; its sd_notify socket and signal handlers are the
//! daemon's.

pub mod bpf;
pub mod caps;
pub mod exec;
pub mod fake;
pub mod files;
pub mod linux;
pub mod memory;
pub mod netlink;
pub mod netns;
pub mod probe;
pub mod procfs;
pub mod signal;
pub mod syscall;
pub mod systemd;

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use crate::model::{
    Cookie, Inode, InodeMap, InodeSet, KernelSocket, Netns, Owner, Pid, Process, StateSet, TcpState,
};
pub use signal::{Signal, SignalOutcome};
pub use systemd::{RestartOutcome, SystemdError};

/// A failed system call or kernel request, naming what was asked and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct SysError {
    /// What was asked, e.g. `sock_diag dump in netns host` or `setns(/proc/42/ns/net)`.
    pub call: String,
    #[source]
    pub source: io::Error,
    /// What a person can do about it, e.g. "needs CAP_SYS_ADMIN to enter other namespaces".
    pub hint: Option<String>,
}

impl SysError {
    pub fn new(call: impl Into<String>, source: io::Error) -> SysError {
        SysError {
            call: call.into(),
            source,
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> SysError {
        self.hint = Some(hint.into());
        self
    }
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// The namespaces visible to this process, and the ones it saw but could not open.
#[derive(Debug, Default)]
pub struct NamespaceList {
    /// De-duplicated by (dev, inode); the namespace sockwarden runs in comes first.
    pub namespaces: Vec<Netns>,
    /// Human-readable reasons why some namespaces or processes could not be inspected.
    pub warnings: Vec<String>,
    /// Namespaces known to exist that could not be listed (e.g. other users' processes'
    /// namespaces hidden without privilege): what a scan did not see.
    pub unseen: Vec<String>,
}

/// One namespace's sock_diag dump.
#[derive(Debug, Default)]
pub struct NetnsDump {
    pub sockets: Vec<KernelSocket>,
    /// `net.ipv4.tcp_fin_timeout` in that namespace: the full length of an orphaned
    /// FIN_WAIT2's timer, needed to turn its remaining time into an age.
    pub tcp_fin_timeout: Duration,
}

/// The result of one pass over `/proc/<pid>/fd`.
#[derive(Debug, Default)]
pub struct OwnerScan {
    /// Every holder of each wanted inode (several when a socket is shared after fork).
    pub owners: InodeMap<Vec<Owner>>,
    /// Processes whose fd table or details could not be read for a reason other than
    /// having exited (usually EACCES when not root).
    pub unreadable: Vec<(Pid, io::ErrorKind)>,
    /// How many processes were looked at.
    pub processes_scanned: usize,
}

/// What the kernel answered to a SOCK_DESTROY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestroyOutcome {
    /// ACKed: the socket was aborted.
    Destroyed,
    /// ENOENT: the socket was already gone.
    AlreadyGone,
    /// ESTALE: the tuple now belongs to another socket (cookie mismatch); nothing touched.
    TupleReused,
    /// EOPNOTSUPP: kernel without CONFIG_INET_DIAG_DESTROY, or a state it cannot abort.
    Unsupported,
    /// EPERM/EACCES: no CAP_NET_ADMIN in the socket's namespace.
    NotPermitted,
    /// Any other errno.
    Failed(i32),
}

/// The kernel, as the rest of sockwarden sees it.
pub trait System {
    /// Every network namespace of the host that this process can see.
    fn namespaces(&self) -> Result<NamespaceList, SysError>;

    /// The namespace a namespace file (`/proc/<pid>/ns/net`, `/run/netns/NAME`) refers to.
    fn namespace_at(&self, path: &std::path::Path) -> Result<Netns, SysError>;

    /// Time since boot (bounds `tcp_info` figures, which count from events since boot).
    fn uptime(&self) -> Duration;

    /// Dump the TCP sockets (IPv4 and IPv6) of one namespace whose state is in `states`,
    /// asking the kernel only for those states, with `tcp_info`.
    fn dump(&self, netns: &Netns, states: StateSet) -> Result<NetnsDump, SysError>;

    /// One pass over several namespaces: each one's sockets in `states` (as
    /// [`System::dump`] gives them, in the order of `namespaces`), and when the kernel moved
    /// sockets into their state. The real system serves a namespace from the eBPF index
    /// where that holds all of it, looking up by id only the sockets the index names there
    /// (a dump walks every socket of the host); the sockets are the same either way.
    fn watch(&self, namespaces: &[Netns], states: StateSet) -> Watch {
        Watch {
            dumps: namespaces.iter().map(|ns| self.dump(ns, states)).collect(),
            ..Watch::default()
        }
    }

    /// One pass attributing the `wanted` socket inodes to processes (through the eBPF
    /// task_file iterator when it is loaded, else over `/proc/<pid>/fd`). Processes that
    /// vanish mid-scan are skipped silently.
    fn owners(&self, wanted: &InodeSet) -> OwnerScan;

    /// [`System::watch`], and at the same time the first half of an owner pass over every
    /// socket file, for [`System::owners_of`] to finish once the caller knows which sockets
    /// it wants: for one-shot commands, which show the owners of what they find.
    fn watch_and_holders(&self, namespaces: &[Netns], states: StateSet) -> (Watch, Holders) {
        (self.watch(namespaces, states), Holders::default())
    }

    /// The owners of `wanted`, from `holders` read by [`System::watch_and_holders`] (or a
    /// pass of their own when there are none).
    fn owners_of(&self, holders: Holders, wanted: &InodeSet) -> OwnerScan {
        let _ = holders;
        self.owners(wanted)
    }

    /// [`System::watch`], and [`System::owners`] of `expected` (the inodes the caller
    /// expects to want: those it saw a moment ago), the two kernel passes side by side
    /// where the real system can. Owners of sockets outside `expected` are not looked for.
    fn watch_with_owners(
        &self,
        namespaces: &[Netns],
        states: StateSet,
        expected: &InodeSet,
    ) -> (Watch, OwnerScan) {
        (self.watch(namespaces, states), self.owners(expected))
    }

    /// Which watcher runs and, when it is not the eBPF one, why.
    fn watcher(&self) -> Watcher;

    /// Look one socket up again by its full id and cookie: `None` if it is gone.
    fn lookup(
        &self,
        netns: &Netns,
        socket: &KernelSocket,
    ) -> Result<Option<KernelSocket>, SysError>;

    /// SOCK_DESTROY several sockets of one namespace, pipelined; outcomes in input order.
    fn destroy_many(
        &self,
        netns: &Netns,
        sockets: &[&KernelSocket],
    ) -> Result<Vec<DestroyOutcome>, SysError>;

    /// Whether `process` — through the handle taken when it was scanned, never by its pid
    /// alone — is alive and still holds one of `inodes`, and its systemd unit now.
    fn holder(&self, process: &Process, inodes: &[Inode]) -> HolderCheck;

    /// Signal `process` through the handle taken when it was scanned, only if that very
    /// process still holds one of `inodes`: a recycled pid, or a process that closed the
    /// socket, is never signalled.
    fn signal(&self, process: &Process, inodes: &[Inode], signal: Signal) -> SignalOutcome;

    /// Restart a unit through systemd's D-Bus API and wait (bounded) for the job.
    fn restart_unit(&self, unit: &str, timeout: Duration) -> Result<RestartOutcome, SystemdError>;

    // ---- what this machine lets sockwarden do (doctor, the daemon's degraded modes) ----

    /// This boot's id (`/proc/sys/kernel/random/boot_id`; empty when the kernel does not say).
    fn boot_id(&self) -> String;

    /// SOCK_DESTROY on a socket of our own in a throwaway namespace: what the kernel answers.
    fn probe_destroy(&self) -> Result<DestroyOutcome, SysError>;

    /// Whether this kernel has pidfds (without them nothing is ever signalled).
    fn pidfd_supported(&self) -> bool;

    /// Whether systemd's D-Bus API answers: its address.
    fn probe_systemd(&self) -> Result<String, SystemdError>;

    /// Whether this process runs as root (euid 0): advice differs for a root process that
    /// lacks capabilities.
    fn is_root(&self) -> bool;

    /// The effective capabilities of this process.
    fn capabilities(&self) -> Result<caps::Capabilities, SysError>;

    /// The kernel release and the cgroup layout.
    fn kernel(&self) -> KernelInfo;

    /// Run a command (argv, never through a shell) with exactly `env` (plus `PATH`) and a
    /// time limit that kills its whole process group.
    fn run_command(
        &self,
        argv: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> CommandOutcome;
}

/// Socket files and the processes holding them, read by [`System::watch_and_holders`]:
/// none when the system read none (the owners are then read in a pass of their own).
#[derive(Debug, Default)]
pub struct Holders {
    pub(crate) holders: Option<Vec<bpf::Holder>>,
    /// Their processes' details, read while the namespaces were still dumped.
    pub(crate) owners: Option<OwnerScan>,
}

/// What [`System::watch`] saw in one pass.
#[derive(Debug, Default)]
pub struct Watch {
    /// One per namespace asked for, in that order.
    pub dumps: Vec<Result<NetnsDump, SysError>>,
    /// When the kernel moved sockets into their watched state, by cookie: what the eBPF
    /// index recorded (empty without it). A socket's entry holds only for the state named.
    pub entered: HashMap<Cookie, Entered>,
    /// Namespaces (by inode) where the index holds sockets but that were not asked for:
    /// created since they were listed, or not selected.
    pub unlisted: Vec<u64>,
}

/// A socket's entry into its state, as the eBPF index recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    pub state: TcpState,
    /// How long ago.
    pub ago: Duration,
}

/// What watches the sockets: told by `doctor`, the daemon's log and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Whether sockwarden's eBPF programs are loaded, or why not.
    pub bpf: Result<(), String>,
    /// Whether the index of state transitions is kept (and where it is pinned), or why not.
    /// One-shot commands use a pinned index but never create one: only the daemon does.
    pub index: Result<String, String>,
    /// Whether owners come from the task_file iterator, or why not.
    pub owners: Result<(), String>,
}

impl Watcher {
    /// The name for logs and the metric label: `bpf` when the index and the owner iterator
    /// both run, `bpf-owners` when only the iterator does, else `sock-diag`.
    pub fn name(&self) -> &'static str {
        match (&self.index, &self.owners) {
            (Ok(_), Ok(())) => "bpf",
            (_, Ok(())) => "bpf-owners",
            _ => "sock-diag",
        }
    }

    /// One line for the log and `doctor`: which parts run, and why the others do not.
    pub fn describe(&self) -> String {
        if let Err(why) = &self.bpf {
            return format!("sock_diag and /proc only, no eBPF: {why}");
        }
        let index = match &self.index {
            Ok(at) => format!("exact ages from the eBPF index at {at}"),
            Err(why) => format!("no eBPF index of state entries ({why})"),
        };
        let owners = match &self.owners {
            Ok(()) => "owners from the eBPF task_file iterator".to_string(),
            Err(why) => format!("owners from /proc ({why})"),
        };
        format!("{index}; {owners}")
    }

    /// sock_diag and `/proc` only, for `why`.
    pub fn without_bpf(why: impl Into<String>) -> Watcher {
        let why = why.into();
        Watcher {
            bpf: Err(why.clone()),
            index: Err(why.clone()),
            owners: Err(why),
        }
    }
}

/// The kernel as `doctor` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    pub cgroups: caps::CgroupLayout,
}

/// What [`System::holder`] found about a process taken as an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderCheck {
    /// Alive and holding one of the sockets; its unit now.
    Holds { unit: Option<String> },
    /// It has exited (or is a zombie); its pid may belong to another process now.
    Exited,
    /// Alive, but it holds none of the sockets any more.
    NoLongerHolds,
    /// No handle was taken on it (no pidfd support): it is never acted on by bare pid.
    NoHandle,
    /// The check could not be made (e.g. its fd table cannot be read).
    Failed(String),
}

/// How a command run by an `exec` action ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum CommandOutcome {
    /// It ran to completion: its exit code (`None` when killed by a signal).
    Exited { code: Option<i32>, stderr: String },
    /// It was still running at the time limit and was killed.
    TimedOut,
    /// It could not be started (not found, not executable).
    NotStarted { error: String },
}
