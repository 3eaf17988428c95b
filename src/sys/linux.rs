//! The real [`System`]: sock_diag netlink, `/proc` and namespaces on this host, and
//! sockwarden's eBPF programs where the kernel and privileges allow them.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::bpf;
use super::bpf::watch;
use super::netlink::DiagSocket;
use super::systemd::Systemd;
use super::{
    netns, procfs, signal, CommandOutcome, DestroyOutcome, Entered, HolderCheck, Holders,
    NamespaceList, NetnsDump, OwnerScan, RestartOutcome, Signal, SignalOutcome, SysError, System,
    SystemdError, Watch, Watcher,
};
use crate::model::{
    Cookie, Inode, InodeSet, KernelSocket, Netns, NetnsId, Process, StateSet, TcpState,
};

/// Set to `sock-diag` to keep to sock_diag and `/proc` (no eBPF programs loaded).
pub const WATCHER_ENV: &str = "SOCKWARDEN_WATCHER";

/// Load the eBPF programs, unless [`WATCHER_ENV`] keeps to sock_diag.
fn load_bpf(create_index: bool) -> Result<bpf::Kernel, bpf::Unavailable> {
    if std::env::var(WATCHER_ENV).is_ok_and(|v| v == "sock-diag") {
        return Err(bpf::Unavailable {
            reason: format!("{WATCHER_ENV}=sock-diag"),
            hint: "unset it to use the eBPF watcher",
        });
    }
    let started = std::time::Instant::now();
    let loaded = bpf::Kernel::load(create_index);
    tracing::debug!(
        took_ms = started.elapsed().as_millis() as u64,
        ok = loaded.is_ok(),
        "eBPF programs loaded"
    );
    loaded
}

/// One netlink socket per namespace, opened inside it on first use and kept for the
/// lifetime of this value (a daemon reuses them pass after pass).
pub struct LinuxSystem {
    sockets: RefCell<HashMap<NetnsId, (DiagSocket, netns::FinTimeout)>>,
    /// Connected on first restart: most runs never need systemd.
    systemd: RefCell<Option<Systemd>>,
    /// The eBPF programs, loaded on first need, or why they are not.
    bpf: OnceCell<Result<bpf::Kernel, bpf::Unavailable>>,
    /// Their loading, when it was started early on a thread of its own (see
    /// [`LinuxSystem::loading_bpf`]).
    bpf_loading: RefCell<Option<std::thread::JoinHandle<Result<bpf::Kernel, bpf::Unavailable>>>>,
    /// Whether to create (and pin) the index of state transitions when none is pinned:
    /// the daemon does; one-shot commands only use one a daemon pinned.
    create_index: bool,
    /// Whether an owner pass through the iterator failed already (said once, in the log).
    owners_failed: std::cell::Cell<bool>,
    /// Why the last pass was not served from the eBPF index (said when it changes).
    unserved: RefCell<Option<String>>,
}

impl LinuxSystem {
    /// For one-shot commands: uses a pinned index, never attaches one of its own.
    pub fn new() -> LinuxSystem {
        LinuxSystem {
            sockets: RefCell::new(HashMap::new()),
            systemd: RefCell::new(None),
            bpf: OnceCell::new(),
            bpf_loading: RefCell::new(None),
            create_index: false,
            owners_failed: std::cell::Cell::new(false),
            unserved: RefCell::new(None),
        }
    }

    /// For a one-shot command that scans: [`LinuxSystem::new`], its eBPF programs loaded
    /// on another thread while the command reads its policies, namespaces and trail (the
    /// load parses the kernel's BTF: tens of milliseconds).
    pub fn loading_bpf() -> LinuxSystem {
        let system = LinuxSystem::new();
        let create_index = system.create_index;
        let loading = std::thread::Builder::new()
            .name("bpf-load".into())
            .spawn(move || load_bpf(create_index));
        // A thread that cannot start leaves the load to the first need.
        *system.bpf_loading.borrow_mut() = loading.ok();
        system
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
                let loading = self.bpf_loading.borrow_mut().take();
                match loading.map(std::thread::JoinHandle::join) {
                    Some(Ok(loaded)) => loaded,
                    // Not started early, or its thread panicked: load here.
                    _ => load_bpf(self.create_index),
                }
            })
            .as_ref()
    }

    /// The iterator's owner pass, or why it cannot serve this one.
    fn owners_by_bpf(&self, wanted: &InodeSet) -> Result<OwnerScan, String> {
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

impl LinuxSystem {
    /// Why a pass over `states` cannot be served from the index (`None`: it can).
    fn why_not_served(&self, kernel: &bpf::Kernel, states: StateSet) -> Option<String> {
        if let Err(why) = &kernel.index {
            return Some(format!("no eBPF index ({why})"));
        }
        if !watch::servable(states) {
            let others: Vec<&str> = states
                .iter()
                .filter(|s| !watch::servable(StateSet::from_iter([*s])))
                .map(|s| s.name())
                .collect();
            return Some(format!("the index holds no {} sockets", others.join(", ")));
        }
        match kernel.unstamped() {
            0 => None,
            n => Some(format!(
                "the eBPF index was full and missed {n} sockets (more than {} stuck at once)",
                bpf::INDEX_CAPACITY
            )),
        }
    }

    /// A pass by sock_diag dumps of each namespace, with the exact entry times of `stamps`.
    fn watch_by_dumps(
        &self,
        namespaces: &[Netns],
        states: StateSet,
        stamps: &[(Cookie, bpf::Stamp)],
    ) -> Watch {
        Watch {
            dumps: namespaces.iter().map(|ns| self.dump(ns, states)).collect(),
            entered: entered_of(stamps),
            unlisted: Vec::new(),
        }
    }

    /// A pass served from the index: in each namespace it holds completely, a lookup by id
    /// of each socket it names (plus dumps of what it cannot hold, where there may be some);
    /// a namespace it does not is swept: dumped once, its sockets stamped.
    fn watch_by_index(
        &self,
        kernel: &bpf::Kernel,
        stamps: &[(Cookie, bpf::Stamp)],
        namespaces: &[Netns],
        states: StateSet,
    ) -> Watch {
        let now = bpf::boot_clock_now();
        let complete = kernel.complete_namespaces().unwrap_or_else(|e| {
            tracing::warn!("cannot read which namespaces the eBPF index holds ({e}): dumping them");
            HashSet::new()
        });
        let requests = kernel.requests();
        // Timewait minisockets are counted only when the pass asks for their states.
        let minisockets =
            states.contains(TcpState::FinWait2) || states.contains(TcpState::TimeWait);
        let mut by_netns: HashMap<u64, Vec<(Cookie, &bpf::Stamp)>> = HashMap::new();
        for (cookie, stamp) in stamps {
            by_netns
                .entry(stamp.netns_inode)
                .or_default()
                .push((*cookie, stamp));
        }
        // A namespace with many stuck sockets may cost less to dump than to look up: that
        // depends on how many sockets the host has (a dump walks them all). Each
        // namespace's counts are read once, when anything needs them.
        let most = by_netns.values().map(Vec::len).max().unwrap_or(0);
        let counts: Vec<Option<netns::TcpCounts>> = if minisockets || most >= MANY_STAMPS {
            namespaces.iter().map(netns::tcp_counts).collect()
        } else {
            vec![None; namespaces.len()]
        };
        let host_sockets = (most >= MANY_STAMPS)
            .then(|| {
                let each = counts.iter().map(|c| c.map(|c| c.in_use + c.timewait));
                each.sum::<Option<u64>>()
            })
            .flatten();
        let dumps = namespaces
            .iter()
            .zip(counts)
            .map(|(ns, counts)| {
                let inode = ns.id.inode;
                let facts = watch::NamespaceFacts {
                    complete: complete.contains(&inode),
                    // Not asked for: none that matter.
                    timewait: if minisockets {
                        counts.map(|c| c.timewait)
                    } else {
                        Some(0)
                    },
                    last_request: requests.as_ref().map(|r| {
                        r.get(&inode)
                            .map(|at| now.saturating_sub(Duration::from_nanos(*at)))
                    }),
                    host_sockets,
                };
                let stamps = by_netns.remove(&inode).unwrap_or_default();
                let plan = watch::plan(states, &stamps, &facts);
                self.serve(kernel, ns, states, &plan)
            })
            .collect();
        Watch {
            dumps,
            entered: entered_of(stamps),
            unlisted: by_netns.into_keys().collect(),
        }
    }

    /// One namespace of a pass served from the index, as `plan` says.
    fn serve(
        &self,
        kernel: &bpf::Kernel,
        ns: &Netns,
        states: StateSet,
        plan: &watch::NamespacePlan<'_>,
    ) -> Result<NetnsDump, SysError> {
        let mut dump = if plan.dump.is_empty() {
            NetnsDump {
                sockets: Vec::new(),
                tcp_fin_timeout: netns::DEFAULT_FIN_TIMEOUT,
            }
        } else {
            self.dump(ns, plan.dump)?
        };
        if plan.sweep {
            let now = bpf::boot_clock_now();
            let indexed = watch::indexed_states();
            kernel.stamp_swept(
                dump.sockets
                    .iter()
                    .filter(|s| indexed.contains(s.state) && s.local.port() != 0)
                    .map(|s| (s.cookie, bpf::Stamp::swept(s, now))),
            );
            tracing::debug!(netns = %ns.name, found = dump.sockets.len(), "swept into the eBPF index");
            if let Err(e) = kernel.mark_complete(ns.id.inode) {
                tracing::warn!(
                    "namespace {}: cannot mark it swept in the eBPF index: {e}",
                    ns.name
                );
            }
            dump.sockets.retain(|s| states.asks_for(s.state));
            return Ok(dump);
        }
        let dumped = dump.sockets.len();
        // In chunks: the sockets asked for are built, and found, a chunk at a time.
        for chunk in plan.lookups.chunks(LOOKUP_CHUNK) {
            let asked: Vec<KernelSocket> = chunk
                .iter()
                .map(|(cookie, stamp)| stamp.socket(ns.id, *cookie))
                .collect();
            let refs: Vec<&KernelSocket> = asked.iter().collect();
            let found = self.with_socket(ns, |s, _| s.lookup_many(ns.id, &refs))?;
            for ((cookie, stamp), found) in chunk.iter().zip(found) {
                match found {
                    // Its state now; one the plan dumps is in the dump already.
                    Some(s) if states.asks_for(s.state) && !plan.dump.asks_for(s.state) => {
                        dump.sockets.push(s)
                    }
                    Some(_) => {}
                    None if stamp.swept => kernel.unstamp_swept(*cookie),
                    None => {}
                }
            }
        }
        tracing::debug!(
            netns = %ns.name,
            looked_up = plan.lookups.len(),
            found = dump.sockets.len() - dumped,
            dumped = %plan.dump,
            "served from the eBPF index"
        );
        Ok(dump)
    }
}

/// From this many stamps in one namespace, a pass weighs dumping it against looking them up.
const MANY_STAMPS: usize = 10_000;

/// From this many sockets of one namespace, destroys are spread over the cores.
const PARALLEL_DESTROYS: usize = 2048;

/// Sockets looked up per round of [`LinuxSystem::serve`].
const LOOKUP_CHUNK: usize = 4096;

/// The exact entry times among `stamps` (a swept stamp only says the socket was there).
fn entered_of(stamps: &[(Cookie, bpf::Stamp)]) -> HashMap<Cookie, Entered> {
    let now = bpf::boot_clock_now();
    stamps
        .iter()
        .filter(|(_, stamp)| !stamp.swept)
        .map(|(cookie, stamp)| {
            let at = Duration::from_nanos(stamp.entered_boot_ns);
            let entered = Entered {
                state: stamp.state,
                ago: now.saturating_sub(at),
            };
            (*cookie, entered)
        })
        .collect()
}

/// Why the iterator's pids cannot be used here.
const NOT_HOST_PIDS: &str = "not in the host's pid namespace: the iterator's pids are the host's (run with the host's pids, e.g. --pid=host)";

impl Default for LinuxSystem {
    fn default() -> Self {
        LinuxSystem::new()
    }
}

/// Up to this many processes hold sockets in the states a one-shot scan asks for, their
/// details are read while the namespaces are dumped (more: after, for the wanted only).
const DETAILS_WHILE_DUMPING: usize = 10_000;

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

    fn watch_and_holders(&self, namespaces: &[Netns], states: StateSet) -> (Watch, Holders) {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        let job = match self.bpf() {
            Ok(kernel)
                if parallel && !self.owners_failed.get() && bpf::in_initial_pid_namespace() =>
            {
                kernel.prepare_all_holders(states)
            }
            _ => return (self.watch(namespaces, states), Holders::default()),
        };
        std::thread::scope(|scope| {
            // The holders of the sockets in `states`, then their details, while the
            // namespaces are dumped: the iterator is done first.
            let holders = scope.spawn(move || {
                job.and_then(bpf::HoldersJob::run).map(|holders| {
                    let mut pids: Vec<crate::model::Pid> = holders.iter().map(|h| h.pid).collect();
                    pids.sort_unstable();
                    pids.dedup();
                    let owners = (pids.len() <= DETAILS_WHILE_DUMPING)
                        .then(|| procfs::owners_of_holders(&holders));
                    tracing::debug!(
                        holders = holders.len(),
                        processes = pids.len(),
                        details = owners.is_some(),
                        "holders of the states asked for, read while dumping"
                    );
                    (holders, owners)
                })
            });
            let watch = self.watch(namespaces, states);
            let (holders, owners) = match holders.join() {
                Ok(Ok((holders, owners))) => (Some(holders), owners),
                Ok(Err(e)) => {
                    tracing::warn!("owners from /proc instead of the eBPF iterator: the task_file iterator: {e}");
                    self.owners_failed.set(true);
                    (None, None)
                }
                Err(_) => (None, None),
            };
            (watch, Holders { holders, owners })
        })
    }

    fn owners_of(&self, holders: Holders, wanted: &InodeSet) -> OwnerScan {
        let Some(mut found) = holders.holders else {
            return self.owners(wanted);
        };
        let held: InodeSet = found.iter().map(|h| h.inode).collect();
        let mut scan = match holders.owners {
            Some(mut scan) => {
                scan.owners.retain(|inode, _| wanted.contains(inode));
                scan
            }
            None => {
                found.retain(|h| wanted.contains(&h.inode));
                procfs::owners_of_holders(&found)
            }
        };
        // A socket that entered its state after the iterator passed its process: read its
        // holders now.
        let missing: InodeSet = wanted.difference(&held).copied().collect();
        tracing::debug!(
            missing = missing.len(),
            "sockets without a holder from the iterator (read again)"
        );
        if !missing.is_empty() {
            let more = self.owners(&missing);
            scan.owners.extend(more.owners);
            scan.unreadable.extend(more.unreadable);
        }
        scan
    }

    fn watch_with_owners(
        &self,
        namespaces: &[Netns],
        states: StateSet,
        expected: &InodeSet,
    ) -> (Watch, OwnerScan) {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return (self.watch(namespaces, states), self.owners(expected));
        }
        // The owner pass needs nothing of the watch: it runs on a thread of its own (with
        // the iterator prepared here, the rest is file reads).
        let by_bpf = match self.bpf() {
            Ok(kernel) if !self.owners_failed.get() && bpf::in_initial_pid_namespace() => {
                Some(kernel.prepare_holders(expected))
            }
            _ => None,
        };
        std::thread::scope(|scope| {
            let owners = scope.spawn(move || match by_bpf {
                Some(Ok(job)) => job.run().map(|holders| procfs::owners_of_holders(&holders)),
                Some(Err(e)) => Err(e),
                None => Ok(procfs::scan_owners(expected)),
            });
            let watch = self.watch(namespaces, states);
            let owners = match owners.join() {
                Ok(Ok(scan)) => scan,
                Ok(Err(e)) => {
                    tracing::warn!("owners from /proc instead of the eBPF iterator: the task_file iterator: {e}");
                    self.owners_failed.set(true);
                    procfs::scan_owners(expected)
                }
                Err(_) => procfs::scan_owners(expected),
            };
            (watch, owners)
        })
    }

    fn owners(&self, wanted: &InodeSet) -> OwnerScan {
        if wanted.is_empty() {
            return OwnerScan::default();
        }
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

    fn watch(&self, namespaces: &[Netns], states: StateSet) -> Watch {
        let Ok(kernel) = self.bpf() else {
            return self.watch_by_dumps(namespaces, states, &[]);
        };
        let stamps = match kernel.stamps() {
            Ok(stamps) => stamps,
            Err(e) => {
                tracing::warn!("cannot read the eBPF index: {e}; dumps and sock_diag ages");
                return self.watch_by_dumps(namespaces, states, &[]);
            }
        };
        match self.why_not_served(kernel, states) {
            None => self.watch_by_index(kernel, &stamps, namespaces, states),
            Some(why) => {
                if self.unserved.replace(Some(why.clone())).as_ref() != Some(&why) {
                    tracing::info!("this pass dumps every namespace: {why}");
                }
                self.watch_by_dumps(namespaces, states, &stamps)
            }
        }
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
        // Each destroy aborts its socket in the kernel (an RST, the peer's teardown): on
        // a mass leak, every core does its share, each through a netlink socket of its own.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 || sockets.len() < PARALLEL_DESTROYS {
            return self.with_socket(ns, |s, _| s.destroy_many(sockets));
        }
        let share = sockets.len().div_ceil(threads);
        let mut parts = sockets.chunks(share);
        let ours = parts.next().unwrap_or_default();
        let own = netns::own_netns_id()?;
        std::thread::scope(|scope| {
            let others: Vec<_> = parts
                .map(|part| {
                    scope.spawn(move || {
                        let (mut socket, _) = netns::open_diag_socket_in(ns, own)?;
                        socket.destroy_many(part)
                    })
                })
                .collect();
            // A part that fails leaves the others' outcomes as the kernel gave them: its own
            // sockets are failed (what was sent of them, the caller's re-dump tells).
            let failed = |part: &[&KernelSocket], e: &SysError| {
                tracing::warn!("{e}");
                let errno = e.errno().unwrap_or(libc::EIO);
                vec![DestroyOutcome::Failed(errno); part.len()]
            };
            let mut outcomes = self
                .with_socket(ns, |s, _| s.destroy_many(ours))
                .unwrap_or_else(|e| failed(ours, &e));
            for (other, part) in others.into_iter().zip(sockets.chunks(share).skip(1)) {
                match other.join() {
                    Ok(Ok(done)) => outcomes.extend(done),
                    Ok(Err(e)) => outcomes.extend(failed(part, &e)),
                    Err(_) => {
                        let e = SysError::new(
                            format!("SOCK_DESTROY in netns {}", ns.name),
                            std::io::Error::other("a destroying thread panicked"),
                        );
                        outcomes.extend(failed(part, &e));
                    }
                }
            }
            Ok(outcomes)
        })
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
