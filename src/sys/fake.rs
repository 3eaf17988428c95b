//! A recording fake of [`System`](super::System) for tests of the layers above the kernel:
//! namespaces, sockets and owners are plain data; destroys are recorded, never performed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::caps::{Capabilities, CgroupLayout};
use super::{
    CommandOutcome, DestroyOutcome, HolderCheck, KernelInfo, NamespaceList, NetnsDump, OwnerScan,
    RestartOutcome, Signal, SignalOutcome, SysError, System, SystemdError,
};
use crate::model::{
    Age, AgeSource, Cookie, Family, Inode, InodeMap, InodeSet, KernelSocket, Netns, NetnsId, Owner,
    Process, ProcessId, StateSet, StuckSocket, TcpState, TcpTimes,
};

/// A plain IPv4 socket for tests: `127.0.0.1:8080` ↔ `127.0.0.1:(40000 + cookie)`, no inode
/// (ownerless), no timer, no `tcp_info`; a test changes what it cares about with `..`.
pub fn socket(netns: NetnsId, cookie: u64, state: TcpState) -> KernelSocket {
    let remote =
        std::net::SocketAddr::from(([127, 0, 0, 1], 40_000u16.wrapping_add(cookie as u16)));
    KernelSocket {
        netns,
        family: Family::Ipv4,
        state,
        local: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
        remote,
        interface: 0,
        cookie: Cookie(cookie),
        inode: Inode(0),
        uid: 0,
        recv_q: 0,
        send_q: 0,
        timer: None,
        tcp: None,
    }
}

/// A stuck socket held by `owners` (each under fd 3), aged `age_secs` by `tcp_info`.
pub fn stuck(socket: KernelSocket, owners: &[&Arc<Process>], age_secs: u64) -> StuckSocket {
    StuckSocket {
        socket,
        owners: owners
            .iter()
            .map(|p| Owner {
                process: Arc::clone(p),
                fd: 3,
            })
            .collect(),
        age: Age {
            secs: age_secs,
            source: AgeSource::TcpInfo,
            lower_bound: false,
        },
    }
}

/// `tcp_info` times for a socket idle for `ms` (last ACK received and last data sent).
pub fn idle(ms: u32) -> TcpTimes {
    TcpTimes {
        last_ack_recv_ms: ms,
        last_data_sent_ms: ms,
        last_data_recv_ms: 0,
    }
}

#[derive(Debug, Default)]
pub struct FakeSystem {
    pub namespaces: Vec<Netns>,
    pub sockets: Vec<KernelSocket>,
    pub owners: InodeMap<Vec<Owner>>,
    pub uptime: Duration,
    /// What the eBPF index would say of state entries (empty: no index).
    pub entered: HashMap<Cookie, super::Entered>,
    /// Outcome to return for a destroy of a given cookie (default: Destroyed).
    pub destroy_outcomes: HashMap<Cookie, DestroyOutcome>,
    /// Every call that reached the kernel boundary, in order, for assertions.
    pub calls: RefCell<Vec<String>>,
    /// Cookies destroyed so far: later dumps and lookups no longer show them.
    pub destroyed: RefCell<HashSet<Cookie>>,
    /// Processes that exist, with their unit: signals to others answer `Exited`.
    pub processes: HashMap<ProcessId, Option<String>>,
    /// What the capability probes find (doctor, the daemon's degraded modes).
    pub probes: Probes,
}

/// The fake machine's answers to the probes; [`Probes::default`] is a machine where
/// everything works.
#[derive(Debug, Clone)]
pub struct Probes {
    pub boot_id: String,
    pub destroy: DestroyOutcome,
    pub pidfd: bool,
    /// The systemd bus address, or why it does not answer.
    pub systemd: Result<String, String>,
    /// Effective capability mask, and whether we run as root.
    pub caps: u64,
    pub root: bool,
    pub kernel_release: String,
    pub cgroups: CgroupLayout,
    pub watcher: super::Watcher,
}

impl Default for Probes {
    fn default() -> Probes {
        Probes {
            boot_id: "fake-boot".into(),
            destroy: DestroyOutcome::Destroyed,
            pidfd: true,
            systemd: Ok("unix:path=/run/dbus/system_bus_socket".into()),
            caps: u64::MAX >> 23,
            root: true,
            kernel_release: "6.18.0-fake".into(),
            cgroups: CgroupLayout::V2Unified,
            watcher: super::Watcher {
                bpf: Ok(()),
                index: Ok("/sys/fs/bpf/sockwarden/v2 (fake)".into()),
                owners: Ok(()),
            },
        }
    }
}

impl FakeSystem {
    /// One SOCK_DESTROY as the fake kernel answers it.
    fn destroy_one(&self, socket: &KernelSocket) -> DestroyOutcome {
        self.record(format!("destroy {}", socket.cookie));
        if !self.alive(socket) {
            return DestroyOutcome::AlreadyGone;
        }
        let outcome = self
            .destroy_outcomes
            .get(&socket.cookie)
            .copied()
            .unwrap_or(DestroyOutcome::Destroyed);
        if outcome == DestroyOutcome::Destroyed {
            self.destroyed.borrow_mut().insert(socket.cookie);
        }
        outcome
    }

    fn record(&self, call: String) {
        self.calls.borrow_mut().push(call);
    }
    fn alive(&self, s: &KernelSocket) -> bool {
        !self.destroyed.borrow().contains(&s.cookie)
    }
}

impl System for FakeSystem {
    fn namespaces(&self) -> Result<NamespaceList, SysError> {
        self.record("namespaces".into());
        Ok(NamespaceList {
            namespaces: self.namespaces.clone(),
            warnings: Vec::new(),
            unseen: Vec::new(),
        })
    }

    fn namespace_at(&self, path: &Path) -> Result<Netns, SysError> {
        self.namespaces
            .iter()
            .find(|n| n.path == path)
            .cloned()
            .ok_or_else(|| {
                SysError::new(
                    format!("stat {}", path.display()),
                    io::ErrorKind::NotFound.into(),
                )
            })
    }

    fn uptime(&self) -> Duration {
        self.uptime
    }

    fn dump(&self, netns: &Netns, states: StateSet) -> Result<NetnsDump, SysError> {
        self.record(format!("dump {}", netns.name));
        let sockets = self
            .sockets
            .iter()
            .filter(|s| s.netns == netns.id && states.contains(s.state) && self.alive(s))
            .cloned()
            .collect();
        Ok(NetnsDump {
            sockets,
            tcp_fin_timeout: Duration::from_secs(60),
        })
    }

    fn watch(&self, namespaces: &[Netns], states: StateSet) -> super::Watch {
        super::Watch {
            dumps: namespaces.iter().map(|ns| self.dump(ns, states)).collect(),
            entered: self.entered.clone(),
            unlisted: Vec::new(),
        }
    }

    fn watcher(&self) -> super::Watcher {
        self.probes.watcher.clone()
    }

    fn owners(&self, wanted: &InodeSet) -> OwnerScan {
        self.record(format!("owners {}", wanted.len()));
        let owners = self
            .owners
            .iter()
            .filter(|(inode, _)| wanted.contains(inode))
            .map(|(inode, o)| (*inode, o.clone()))
            .collect();
        OwnerScan {
            owners,
            unreadable: Vec::new(),
            processes_scanned: self.owners.len(),
        }
    }

    fn lookup(
        &self,
        _netns: &Netns,
        socket: &KernelSocket,
    ) -> Result<Option<KernelSocket>, SysError> {
        self.record(format!("lookup {}", socket.cookie));
        Ok(self
            .sockets
            .iter()
            .find(|s| s.cookie == socket.cookie && self.alive(s))
            .cloned())
    }

    fn destroy_many(
        &self,
        _netns: &Netns,
        sockets: &[&KernelSocket],
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        Ok(sockets.iter().map(|s| self.destroy_one(s)).collect())
    }

    fn holder(&self, process: &Process, inodes: &[Inode]) -> HolderCheck {
        self.record(format!("holder {}", process.id.pid));
        let Some(unit) = self.processes.get(&process.id) else {
            return HolderCheck::Exited;
        };
        let holds = inodes.iter().any(|i| {
            self.owners
                .get(i)
                .is_some_and(|os| os.iter().any(|o| o.process.id == process.id))
        });
        if holds {
            HolderCheck::Holds { unit: unit.clone() }
        } else {
            HolderCheck::NoLongerHolds
        }
    }

    fn signal(&self, process: &Process, inodes: &[Inode], signal: Signal) -> SignalOutcome {
        self.record(format!("signal {} {signal}", process.id.pid));
        match self.holder(process, inodes) {
            HolderCheck::Holds { .. } => SignalOutcome::Delivered,
            HolderCheck::NoLongerHolds => SignalOutcome::NoLongerHolds,
            _ => SignalOutcome::Exited,
        }
    }

    fn restart_unit(&self, unit: &str, _timeout: Duration) -> Result<RestartOutcome, SystemdError> {
        self.record(format!("restart {unit}"));
        Ok(RestartOutcome::Restarted {
            old_main_pid: Some(1),
            new_main_pid: Some(2),
            job_result: "done".into(),
        })
    }

    fn boot_id(&self) -> String {
        self.probes.boot_id.clone()
    }

    fn probe_destroy(&self) -> Result<DestroyOutcome, SysError> {
        Ok(self.probes.destroy)
    }

    fn pidfd_supported(&self) -> bool {
        self.probes.pidfd
    }

    fn probe_systemd(&self) -> Result<String, SystemdError> {
        self.probes
            .systemd
            .clone()
            .map_err(|cause| SystemdError::NotRunning {
                address: "unix:path=/run/dbus/system_bus_socket".into(),
                cause,
            })
    }

    fn is_root(&self) -> bool {
        self.probes.root
    }

    fn capabilities(&self) -> Result<Capabilities, SysError> {
        Ok(Capabilities::from_mask(self.probes.caps))
    }

    fn kernel(&self) -> KernelInfo {
        KernelInfo {
            release: self.probes.kernel_release.clone(),
            cgroups: self.probes.cgroups,
        }
    }

    fn run_command(
        &self,
        argv: &[String],
        _env: &[(String, String)],
        _timeout: Duration,
    ) -> CommandOutcome {
        self.record(format!("exec {}", argv.join(" ")));
        CommandOutcome::Exited {
            code: Some(0),
            stderr: String::new(),
        }
    }
}
