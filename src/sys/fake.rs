//! A recording fake of [`System`](super::System) for tests of the layers above the kernel:
//! namespaces, sockets and owners are plain data; destroys are recorded, never performed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{
    CommandOutcome, DestroyOutcome, HolderCheck, NamespaceList, NetnsDump, OwnerScan,
    RestartOutcome, Signal, SignalOutcome, SysError, System, SystemdError,
};
use crate::model::{
    Age, AgeSource, Cookie, Family, Inode, KernelSocket, Netns, NetnsId, Owner, Process, ProcessId,
    StateSet, StuckSocket, TcpState, TcpTimes,
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
    pub owners: HashMap<Inode, Vec<Owner>>,
    pub uptime: Duration,
    /// Outcome to return for a destroy of a given cookie (default: Destroyed).
    pub destroy_outcomes: HashMap<Cookie, DestroyOutcome>,
    /// Every call that reached the kernel boundary, in order, for assertions.
    pub calls: RefCell<Vec<String>>,
    /// Cookies destroyed so far: later dumps and lookups no longer show them.
    pub destroyed: RefCell<HashSet<Cookie>>,
    /// Processes that exist, with their unit: signals to others answer `Exited`.
    pub processes: HashMap<ProcessId, Option<String>>,
}

impl FakeSystem {
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

    fn owners(&self, wanted: &HashSet<Inode>) -> OwnerScan {
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

    fn destroy(&self, _netns: &Netns, socket: &KernelSocket) -> Result<DestroyOutcome, SysError> {
        self.record(format!("destroy {}", socket.cookie));
        if !self.alive(socket) {
            return Ok(DestroyOutcome::AlreadyGone);
        }
        let outcome = self
            .destroy_outcomes
            .get(&socket.cookie)
            .copied()
            .unwrap_or(DestroyOutcome::Destroyed);
        if outcome == DestroyOutcome::Destroyed {
            self.destroyed.borrow_mut().insert(socket.cookie);
        }
        Ok(outcome)
    }

    fn destroy_many(
        &self,
        netns: &Netns,
        sockets: &[KernelSocket],
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        sockets.iter().map(|s| self.destroy(netns, s)).collect()
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
