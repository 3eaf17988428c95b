//! The real [`System`]: sock_diag netlink, `/proc` and namespaces on this host, and
//! sockwarden's eBPF programs where the kernel and privileges allow them.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::bpf;
use super::netlink::DiagSocket;
use super::systemd::Systemd;
use super::{
    netns, procfs, signal, CommandOutcome, DestroyOutcome, Entered, HolderCheck, NamespaceList,
    NetnsDump, OwnerScan, RestartOutcome, Signal, SignalOutcome, SysError, System, SystemdError,
    Watcher,
};
use crate::model::{Cookie, Inode, KernelSocket, Netns, NetnsId, Process, StateSet};

/// Set to `sock-diag` to keep to sock_diag and `/proc` (no eBPF programs loaded).
pub const WATCHER_ENV: &str = "SOCKWARDEN_WATCHER";

/// One netlink socket per namespace, opened inside it on first use and kept for the
/// lifetime of this value (a daemon reuses them pass after pass).
pub struct LinuxSystem {
    sockets: RefCell<HashMap<NetnsId, (DiagSocket, netns::FinTimeout)>>,
    /// Connected on first restart: most runs never need systemd.
    systemd: RefCell<Option<Systemd>>,
    /// The eBPF programs, loaded on first need, or why they are not.
    bpf: OnceCell<Result<bpf::Kernel, bpf::Unavailable>>,
    /// Whether to create (and pin) the index of state transitions when none is pinned:
    /// the daemon does; one-shot commands only use one a daemon pinned.
    create_index: bool,
    /// Whether an owner pass through the iterator failed already (said once, in the log).
    owners_failed: std::cell::Cell<bool>,
}

impl LinuxSystem {
    /// For one-shot commands: uses a pinned index, never attaches one of its own.
    pub fn new() -> LinuxSystem {
        LinuxSystem {
            sockets: RefCell::new(HashMap::new()),
            systemd: RefCell::new(None),
            bpf: OnceCell::new(),
            create_index: false,
            owners_failed: std::cell::Cell::new(false),
        }
    }

    /// For the daemon: creates and pins the index of state transitions when none is there.
    pub fn for_daemon() -> LinuxSystem {
        LinuxSystem {
            create_index: true,
            ..LinuxSystem::new()
        }
    }

    fn bpf(&self) -> Result<&bpf::Kernel, &bpf::Unavailable> {
        self.bpf
            .get_or_init(|| {
                if std::env::var(WATCHER_ENV).is_ok_and(|v| v == "sock-diag") {
                    return Err(bpf::Unavailable {
                        reason: format!("{WATCHER_ENV}=sock-diag"),
                        hint: "unset it to use the eBPF watcher",
                    });
                }
                let started = std::time::Instant::now();
                let loaded = bpf::Kernel::load(self.create_index);
                tracing::debug!(
                    took_ms = started.elapsed().as_millis() as u64,
                    ok = loaded.is_ok(),
                    "eBPF programs loaded"
                );
                loaded
            })
            .as_ref()
    }

    /// The iterator's owner pass, or why it cannot serve this one.
    fn owners_by_bpf(&self, wanted: &HashSet<Inode>) -> Result<OwnerScan, String> {
        let kernel = self.bpf().map_err(|e| e.to_string())?;
        if !bpf::in_initial_pid_namespace() {
            return Err(NOT_HOST_PIDS.to_string());
        }
        let holders = kernel
            .holders(wanted)
            .map_err(|e| format!("the task_file iterator: {e}"))?;
        let scan = procfs::owners_of_holders(&holders);
        tracing::debug!(
            holders = holders.len(),
            processes = scan.processes_scanned,
            "owners from the iterator"
        );
        Ok(scan)
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

/// Why the iterator's pids cannot be used here.
const NOT_HOST_PIDS: &str = "not in the host's pid namespace: the iterator's pids are the host's (run with the host's pids, e.g. --pid=host)";

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
        if self.bpf().is_ok() && !self.owners_failed.get() {
            match self.owners_by_bpf(wanted) {
                Ok(scan) => return scan,
                Err(why) => {
                    tracing::warn!("owners from /proc instead of the eBPF iterator: {why}");
                    self.owners_failed.set(true);
                }
            }
        }
        procfs::scan_owners(wanted)
    }

    fn entered_states(&self) -> HashMap<Cookie, Entered> {
        let Ok(kernel) = self.bpf() else {
            return HashMap::new();
        };
        let stamps = match kernel.stamps() {
            Ok(stamps) => stamps,
            Err(e) => {
                tracing::warn!("cannot read the eBPF index: {e}; ages from sock_diag evidence");
                return HashMap::new();
            }
        };
        let now = bpf::boot_clock_now();
        stamps
            .into_iter()
            .map(|(cookie, stamp)| {
                let at = Duration::from_nanos(stamp.entered_boot_ns);
                let entered = Entered {
                    state: stamp.state,
                    ago: now.saturating_sub(at),
                };
                (cookie, entered)
            })
            .collect()
    }

    fn watcher(&self) -> Watcher {
        match self.bpf() {
            Err(e) => Watcher::without_bpf(e.to_string()),
            Ok(kernel) => Watcher {
                bpf: Ok(()),
                index: kernel.index.clone(),
                owners: if self.owners_failed.get() {
                    Err("an owner pass through the iterator failed (see the log)".into())
                } else if bpf::in_initial_pid_namespace() {
                    Ok(())
                } else {
                    Err(NOT_HOST_PIDS.into())
                },
            },
        }
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
