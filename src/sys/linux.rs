//! The real [`System`]: sock_diag netlink, `/proc` and namespaces on this host.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::netlink::DiagSocket;
use super::systemd::Systemd;
use super::{
    netns, procfs, signal, CommandOutcome, DestroyOutcome, HolderCheck, NamespaceList, NetnsDump,
    OwnerScan, RestartOutcome, Signal, SignalOutcome, SysError, System, SystemdError,
};
use crate::model::{Inode, KernelSocket, Netns, NetnsId, Process, StateSet};

/// One netlink socket per namespace, opened inside it on first use and kept for the
/// lifetime of this value (a daemon reuses them pass after pass).
pub struct LinuxSystem {
    sockets: RefCell<HashMap<NetnsId, (DiagSocket, netns::FinTimeout)>>,
    /// Connected on first restart: most runs never need systemd.
    systemd: RefCell<Option<Systemd>>,
}

impl LinuxSystem {
    pub fn new() -> LinuxSystem {
        LinuxSystem {
            sockets: RefCell::new(HashMap::new()),
            systemd: RefCell::new(None),
        }
    }

    /// Run `f` on the netlink socket bound to `ns`, opening it if needed.
    fn with_socket<T>(
        &self,
        ns: &Netns,
        f: impl FnOnce(&mut DiagSocket, Duration) -> Result<T, SysError>,
    ) -> Result<T, SysError> {
        let mut sockets = self.sockets.borrow_mut();
        let entry = match sockets.entry(ns.id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let own = netns::own_netns_id()?;
                e.insert(netns::open_diag_socket_in(ns, own)?)
            }
        };
        let (socket, fin_timeout) = entry;
        let result = f(socket, fin_timeout.read());
        if result.is_err() {
            // A socket that failed mid-conversation may hold unread replies: start afresh.
            sockets.remove(&ns.id);
        }
        result
    }
}

impl Default for LinuxSystem {
    fn default() -> Self {
        LinuxSystem::new()
    }
}

impl System for LinuxSystem {
    fn namespaces(&self) -> Result<NamespaceList, SysError> {
        let list = netns::list_namespaces();
        // A netlink socket holds its namespace alive: drop the ones for namespaces that
        // are gone, or a long-running daemon would keep every dead container's netns.
        let live: std::collections::HashSet<NetnsId> =
            list.namespaces.iter().map(|n| n.id).collect();
        self.sockets.borrow_mut().retain(|id, _| live.contains(id));
        Ok(list)
    }

    fn namespace_at(&self, path: &Path) -> Result<Netns, SysError> {
        netns::namespace_at(path)
    }

    fn uptime(&self) -> Duration {
        std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::MAX)
    }

    fn dump(&self, ns: &Netns, states: StateSet) -> Result<NetnsDump, SysError> {
        // An empty namespace costs two small file reads, not a walk of every socket of the
        // host (nor a thread that enters it).
        if netns::has_tcp_sockets(ns) == Some(false) {
            return Ok(NetnsDump {
                sockets: Vec::new(),
                tcp_fin_timeout: netns::DEFAULT_FIN_TIMEOUT,
            });
        }
        self.with_socket(ns, |socket, tcp_fin_timeout| {
            Ok(NetnsDump {
                sockets: socket.dump(ns.id, states)?,
                tcp_fin_timeout,
            })
        })
    }

    fn owners(&self, wanted: &HashSet<Inode>) -> OwnerScan {
        procfs::scan_owners(wanted)
    }

    fn lookup(&self, ns: &Netns, socket: &KernelSocket) -> Result<Option<KernelSocket>, SysError> {
        self.with_socket(ns, |s, _| s.lookup(socket))
    }

    fn destroy_many(
        &self,
        ns: &Netns,
        sockets: &[&KernelSocket],
    ) -> Result<Vec<DestroyOutcome>, SysError> {
        self.with_socket(ns, |s, _| s.destroy_many(sockets))
    }

    fn holder(&self, process: &Process, inodes: &[Inode]) -> HolderCheck {
        procfs::check_holder(process, inodes)
    }

    fn signal(&self, process: &Process, inodes: &[Inode], sig: Signal) -> SignalOutcome {
        signal::signal_holder(process, inodes, sig)
    }

    fn restart_unit(&self, unit: &str, timeout: Duration) -> Result<RestartOutcome, SystemdError> {
        let mut slot = self.systemd.borrow_mut();
        let connection = match slot.take() {
            Some(connection) => slot.insert(connection),
            None => slot.insert(Systemd::connect()?),
        };
        connection.restart_unit(unit, timeout)
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    fn probe_destroy(&self) -> Result<DestroyOutcome, SysError> {
        super::probe::destroy_support()
    }

    fn pidfd_supported(&self) -> bool {
        signal::pidfd_supported()
    }

    fn probe_systemd(&self) -> Result<String, SystemdError> {
        Systemd::connect().map(|sd| sd.address().to_string())
    }

    fn is_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn capabilities(&self) -> Result<super::caps::Capabilities, SysError> {
        super::caps::Capabilities::current()
            .map_err(|e| SysError::new("read CapEff from /proc/self/status", e))
    }

    fn kernel(&self) -> super::KernelInfo {
        super::KernelInfo {
            release: super::caps::kernel_release(),
            cgroups: super::caps::cgroup_layout(),
        }
    }

    fn run_command(
        &self,
        argv: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> CommandOutcome {
        super::exec::run_command(argv, env, timeout)
    }
}
