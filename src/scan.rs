//! The watcher: one pass over every selected namespace's sock_diag dump, attributed to
//! owners (only when there are candidates) and aged. Pure over [`System`].

use std::collections::HashMap;
use std::time::SystemTime;

use crate::age::{self, AgeContext};
use crate::filter::{NetnsSelector, SocketFilter};
use crate::model::{Cookie, InodeSet, KernelSocket, Netns, NetnsId, StuckSocket, TcpState};
use crate::sys::{OwnerScan, SysError, System};

/// Everything one scan saw.
#[derive(Debug)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    /// The namespaces that were dumped.
    pub namespaces: Vec<Netns>,
    /// Matching sockets, sorted oldest first.
    pub sockets: Vec<StuckSocket>,
    /// Things the user should know: namespaces or processes that could not be inspected.
    pub warnings: Vec<String>,
    /// Whether owners were looked up at all (false when nothing needed attributing).
    pub owners_scanned: bool,
    /// Processes whose fds could not be read (their sockets' owners may be missing).
    pub unreadable_processes: usize,
    /// Namespaces that exist but could not be read (not entered, not dumped, or hidden):
    /// a scan with any is not an all-clear.
    pub unseen: Vec<String>,
    /// The host has been up long enough (49.7 days) for `tcp_info` ages to have wrapped.
    pub tcp_info_may_wrap: bool,
    /// (namespace, cookie, state) of the sockets the dumps returned that the selectors left
    /// out of `sockets`: with those, every socket seen ([`Snapshot::seen`]), what a watcher
    /// observes to age sockets by first sight. Kept apart so that a mass leak's 100,000
    /// selected sockets are not listed twice.
    pub passed_over: Vec<SocketKey>,
    /// Namespaces (by inode) where the eBPF index holds sockets that were not scanned
    /// (created since they were listed, or not selected): a daemon lists them again.
    pub unlisted: Vec<u64>,
}

impl Snapshot {
    pub fn netns(&self, id: NetnsId) -> Option<&Netns> {
        self.namespaces.iter().find(|n| n.id == id)
    }

    /// (namespace, cookie, state) of every socket the dumps returned, before the age, port
    /// and owner selectors: the selected ones, then the others.
    pub fn seen(&self) -> impl Iterator<Item = SocketKey> + '_ {
        self.sockets
            .iter()
            .map(|s| s.key())
            .chain(self.passed_over.iter().copied())
    }

    /// How many sockets the dumps returned (the length of [`Snapshot::seen`]).
    pub fn seen_count(&self) -> usize {
        self.sockets.len() + self.passed_over.len()
    }

    /// Readable names of the dumped namespaces, as the policy engine's `netns` selector
    /// needs them.
    pub fn netns_names(&self) -> HashMap<NetnsId, String> {
        self.namespaces
            .iter()
            .map(|n| (n.id, n.name.clone()))
            .collect()
    }

    /// Readable name of a namespace, or its inode when unknown.
    pub fn netns_name(&self, id: NetnsId) -> std::borrow::Cow<'_, str> {
        match self.netns(id) {
            Some(n) => n.name.as_str().into(),
            None => id.to_string().into(),
        }
    }

    /// `s` as scripts and the audit log see it, its namespace named as this snapshot names
    /// it (by its inode when it was not dumped).
    pub fn socket_record(&self, s: &StuckSocket) -> crate::record::SocketRecord {
        match self.netns(s.socket.netns) {
            Some(netns) => crate::record::SocketRecord::new(s, netns),
            None => crate::record::SocketRecord::new(s, &Netns::unnamed(s.socket.netns)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no network namespace matches `--netns {0}`; run `sockwarden scan --netns all` to list them, or `ip netns list`")]
    NoSuchNetns(String),
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// Dumped sockets turned into the snapshot's per round (see [`scan_with`]).
const CONVERT_CHUNK: usize = 8192;

/// Identifies a socket in a state across passes. The namespace is part of it because
/// kernels before 5.12 number cookies per namespace.
pub type SocketKey = (NetnsId, Cookie, TcpState);

/// When the agent first saw each socket in its state, for ages by observation (the daemon
/// fills this; a one-shot scan has none).
pub use crate::observed::Observations;

/// Scan the selected namespaces for sockets matching `filter`, as a one-shot command does
/// (owners read alongside the dumps).
pub fn scan(
    sys: &dyn System,
    filter: &SocketFilter,
    observations: &Observations,
    now: SystemTime,
) -> Result<Snapshot, ScanError> {
    let listed = list_namespaces(sys, &filter.netns)?;
    let owners = OwnerPass::Alongside;
    let mut snap = scan_with(sys, &listed.namespaces, filter, observations, now, owners)?;
    let mut warnings = listed.warnings;
    warnings.append(&mut snap.warnings);
    snap.warnings = warnings;
    let mut unseen = listed.unseen;
    unseen.append(&mut snap.unseen);
    snap.unseen = unseen;
    Ok(snap)
}

/// The namespaces a selector picked, with what listing them could not see.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub namespaces: Vec<Netns>,
    pub warnings: Vec<String>,
    /// Namespaces known to exist that could not be listed (only for `--netns all`).
    pub unseen: Vec<String>,
}

/// The namespaces `selector` picks (this walks `/proc/*/ns/net`), with the warnings of
/// listing them. A watcher lists them now and then and scans them with [`scan_in`].
pub fn list_namespaces(sys: &dyn System, selector: &NetnsSelector) -> Result<Listed, ScanError> {
    let list = sys.namespaces()?;
    let all = matches!(selector, NetnsSelector::All);
    let namespaces = select_namespaces(sys, list.namespaces, selector)?;
    Ok(Listed {
        namespaces,
        warnings: list.warnings,
        unseen: if all { list.unseen } else { Vec::new() },
    })
}

/// When a scan reads the owners of the sockets it found.
#[derive(Debug, Clone, Copy)]
pub enum OwnerPass<'a> {
    /// After the dumps, for the sockets the filter keeps (nothing when there are none: a
    /// daemon at rest reads no owners).
    After,
    /// While the namespaces are dumped, for these inodes (sockets seen a moment ago); the
    /// owners of sockets found outside them after.
    Expected(&'a InodeSet),
    /// Every socket file read while the namespaces are dumped, then kept for the sockets
    /// the filter keeps: one-shot commands, which show the owners of what they find.
    Alongside,
}

/// [`scan`] over namespaces already listed: no `/proc` walk unless some socket needs an
/// owner. `filter.netns` is not looked at.
pub fn scan_in(
    sys: &dyn System,
    namespaces: &[Netns],
    filter: &SocketFilter,
    observations: &Observations,
    now: SystemTime,
) -> Result<Snapshot, ScanError> {
    scan_with(sys, namespaces, filter, observations, now, OwnerPass::After)
}

/// [`scan_in`], with the owners read as `owners` says.
pub fn scan_with(
    sys: &dyn System,
    namespaces: &[Netns],
    filter: &SocketFilter,
    observations: &Observations,
    now: SystemTime,
    owners: OwnerPass<'_>,
) -> Result<Snapshot, ScanError> {
    let mut warnings = Vec::new();
    let mut unseen = Vec::new();
    let only_one = namespaces.len() == 1;
    let uptime = sys.uptime();
    let started = std::time::Instant::now();

    // The owners read alongside the dumps, if any.
    enum Early<'e> {
        None,
        Expected(&'e InodeSet, OwnerScan),
        Holders(crate::sys::Holders),
    }
    let (watch, early) = match owners {
        OwnerPass::After => (sys.watch(namespaces, filter.states), Early::None),
        OwnerPass::Expected(expected) => {
            let (watch, scan) = sys.watch_with_owners(namespaces, filter.states, expected);
            (watch, Early::Expected(expected, scan))
        }
        OwnerPass::Alongside => {
            let (watch, holders) = sys.watch_and_holders(namespaces, filter.states);
            (watch, Early::Holders(holders))
        }
    };
    // Exact entry times where the eBPF index has them (empty without it).
    let crate::sys::Watch {
        dumps,
        entered,
        unlisted,
    } = watch;
    let mut sockets = Vec::new();
    let mut passed_over = Vec::new();
    let mut dumped = Vec::with_capacity(namespaces.len());
    // One dumped socket: observed, aged, kept if the filter's kernel-side selectors take it.
    let mut take = |socket: KernelSocket, tcp_fin_timeout| {
        let ctx = AgeContext {
            tcp_fin_timeout,
            uptime,
            observed: observations
                .get((socket.netns, socket.cookie, socket.state))
                .and_then(|first| now.duration_since(first).ok()),
            entered: entered
                .get(&socket.cookie)
                .filter(|e| e.state == socket.state)
                .map(|e| e.ago),
        };
        let age = age::estimate(&socket, &ctx);
        let stuck = StuckSocket {
            socket,
            owners: Default::default(),
            age,
        };
        if filter.matches_kernel_view(&stuck) {
            sockets.push(stuck);
        } else {
            passed_over.push(stuck.key());
        }
    };
    for (netns, dump) in namespaces.iter().zip(dumps) {
        match dump {
            Ok(mut dump) => {
                // Taken from the end a chunk at a time, the dump's memory given back as it
                // goes (at 100,000 sockets the dump and the snapshot are 15 MiB each); the
                // snapshot is sorted below.
                while !dump.sockets.is_empty() {
                    let from = dump.sockets.len().saturating_sub(CONVERT_CHUNK);
                    let chunk: Vec<KernelSocket> = dump.sockets.drain(from..).collect();
                    dump.sockets.shrink_to_fit();
                    for socket in chunk {
                        take(socket, dump.tcp_fin_timeout);
                    }
                }
                dumped.push(netns.clone());
            }
            // The one namespace asked for failing is an error; one of many failing (it
            // vanished, or we may not enter it) is a warning and the scan goes on.
            Err(e) if only_one => return Err(e.into()),
            Err(e) => {
                warnings.push(format!("namespace {}: {e}", netns.name));
                unseen.push(format!("namespace {}", netns.name));
            }
        }
    }
    sockets.shrink_to_fit();

    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        sockets = sockets.len(),
        "dumped"
    );
    let wanted: InodeSet = sockets
        .iter()
        .map(|s| s.socket.inode)
        .filter(|i| i.0 != 0)
        .collect();
    let owners_scanned = !wanted.is_empty();
    let mut unreadable_processes = 0;
    if owners_scanned {
        let OwnerScan {
            mut owners,
            unreadable,
            ..
        } = match early {
            Early::Expected(expected, mut scan) => {
                // Sockets that were not expected (new since) are attributed now.
                let missing: InodeSet = wanted.difference(expected).copied().collect();
                if !missing.is_empty() {
                    let more = sys.owners(&missing);
                    scan.owners.extend(more.owners);
                    scan.unreadable.extend(more.unreadable);
                }
                scan
            }
            Early::Holders(holders) => sys.owners_of(holders, &wanted),
            Early::None => sys.owners(&wanted),
        };
        unreadable_processes = unreadable.len();
        for s in &mut sockets {
            if let Some(found) = owners.remove(&s.socket.inode) {
                s.owners = found.into();
            }
        }
        // Only worth saying when some socket that a process holds was left without owners.
        let unattributed = sockets
            .iter()
            .any(|s| s.owners.is_empty() && s.socket.inode.0 != 0);
        if unattributed && !unreadable.is_empty() {
            warnings.push(unreadable_warning(&unreadable));
        }
    }
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        "owners read"
    );
    if filter.needs_owners() {
        sockets.retain(|s| {
            let keep = filter.matches_owners(s);
            if !keep {
                passed_over.push(s.key());
            }
            keep
        });
    }
    sort_oldest_first(&mut sockets);

    Ok(Snapshot {
        taken_at: now,
        namespaces: dumped,
        sockets,
        warnings,
        owners_scanned,
        unreadable_processes,
        unseen,
        tcp_info_may_wrap: age::tcp_info_may_wrap(uptime),
        passed_over,
        unlisted,
    })
}

/// Oldest first, then by cookie (ties in their dump order). A socket is 200 bytes: its
/// key is sorted, then each socket moved once into place (a stable sort of the sockets
/// themselves moves each many times, through a scratch copy of half of them).
fn sort_oldest_first(sockets: &mut [StuckSocket]) {
    let mut order: Vec<(std::cmp::Reverse<u64>, Cookie, usize)> = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| (std::cmp::Reverse(s.age.secs), s.socket.cookie, i))
        .collect();
    order.sort_unstable();
    // from[to]: which socket goes to place `to`. Each cycle of the permutation is walked
    // once, a swap per step.
    let mut from: Vec<usize> = order.into_iter().map(|(_, _, i)| i).collect();
    for start in 0..from.len() {
        let mut to = start;
        loop {
            let source = from[to];
            from[to] = to;
            if source == start {
                break;
            }
            sockets.swap(to, source);
            to = source;
        }
    }
}

fn select_namespaces(
    sys: &dyn System,
    all: Vec<Netns>,
    selector: &NetnsSelector,
) -> Result<Vec<Netns>, ScanError> {
    let picked: Vec<Netns> = match selector {
        NetnsSelector::All => all,
        // The namespace sockwarden runs in is listed first and named `host`.
        NetnsSelector::Host => all.into_iter().take(1).collect(),
        NetnsSelector::Named(name) => all
            .into_iter()
            .filter(|n| &n.name == name || n.id.inode.to_string() == *name)
            .collect(),
        NetnsSelector::Path(path) => {
            let wanted = sys.namespace_at(path)?;
            let known = all.into_iter().find(|n| n.id == wanted.id);
            vec![known.unwrap_or(wanted)]
        }
    };
    if picked.is_empty() {
        let text = match selector {
            NetnsSelector::Named(n) => n.clone(),
            other => format!("{other:?}"),
        };
        return Err(ScanError::NoSuchNetns(text));
    }
    Ok(picked)
}

fn unreadable_warning(unreadable: &[(crate::model::Pid, std::io::ErrorKind)]) -> String {
    let sample: Vec<String> = unreadable
        .iter()
        .take(5)
        .map(|(p, _)| p.to_string())
        .collect();
    format!(
        "could not read the open files of {} process(es) (pid {}{}): permission denied; \
         sockets they hold are shown without owners. Run as root with CAP_SYS_PTRACE and \
         CAP_DAC_READ_SEARCH to see every owner (if already root, a security module or a \
         hardened /proc hides these processes)",
        unreadable.len(),
        sample.join(", "),
        if unreadable.len() > 5 { ", …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use super::*;
    use crate::filter::Pattern;
    use crate::model::{Inode, KernelSocket, Owner, Pid, Process, ProcessId, StateSet};
    use crate::sys::fake::FakeSystem;

    const HOST: NetnsId = NetnsId {
        dev: 4,
        inode: 4026531840,
    };
    const POD: NetnsId = NetnsId {
        dev: 4,
        inode: 4026532000,
    };

    fn netns(id: NetnsId, name: &str) -> Netns {
        Netns::new(id, name, format!("/proc/{}/ns/net", id.inode))
    }

    /// Sorting by key and moving each socket once gives the stable sort's order: oldest
    /// first, then by cookie, ties (one cookie in two namespaces) in their dump order.
    #[test]
    fn sockets_sort_oldest_first_as_a_stable_sort_would() {
        use crate::sys::fake::{socket, stuck};
        let other = NetnsId { dev: 9, inode: 9 };
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let sockets: Vec<StuckSocket> = (0..2000)
            .map(|i| {
                let netns = if i % 2 == 0 { HOST } else { other };
                stuck(socket(netns, next(500), TcpState::CloseWait), &[], next(50))
            })
            .collect();
        let key = |s: &StuckSocket| (s.age.secs, s.socket.cookie, s.socket.netns);
        let mut expected = sockets.clone();
        expected.sort_by(|a, b| {
            b.age
                .secs
                .cmp(&a.age.secs)
                .then(a.socket.cookie.cmp(&b.socket.cookie))
        });
        let mut got = sockets;
        sort_oldest_first(&mut got);
        let keys = |v: &[StuckSocket]| v.iter().map(key).collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(&expected));
    }

    fn sock(netns: NetnsId, cookie: u64, state: TcpState, port: u16, idle_ms: u32) -> KernelSocket {
        KernelSocket {
            local: format!("127.0.0.1:{port}").parse().expect("addr"),
            remote: "127.0.0.1:40000".parse().expect("addr"),
            inode: Inode(cookie * 10),
            tcp: Some(crate::sys::fake::idle(idle_ms)),
            ..crate::sys::fake::socket(netns, cookie, state)
        }
    }

    fn process(pid: i32, comm: &str, unit: Option<&str>) -> Arc<Process> {
        Arc::new(Process {
            id: ProcessId {
                pid: Pid(pid),
                start_time: 100,
            },
            comm: comm.into(),
            cmdline: comm.into(),
            exe: None,
            uid: 0,
            unit: unit.map(str::to_string),
            container: None,
            handle: Default::default(),
        })
    }

    /// Host: api (api.service) holds cookies 1 and 2, an orphan (inode 0) is cookie 3;
    /// pod: worker holds cookie 4.
    fn fixture() -> FakeSystem {
        let api = process(100, "api", Some("api.service"));
        let worker = process(200, "worker", None);
        let mut orphan = sock(HOST, 3, TcpState::FinWait1, 8080, 5_000);
        orphan.inode = Inode(0);
        let mut sys = FakeSystem {
            namespaces: vec![netns(HOST, "host"), netns(POD, "pod")],
            sockets: vec![
                sock(HOST, 1, TcpState::CloseWait, 8080, 700_000),
                sock(HOST, 2, TcpState::CloseWait, 9090, 30_000),
                orphan,
                sock(POD, 4, TcpState::FinWait2, 7070, 1_000),
            ],
            uptime: Duration::from_secs(86_400),
            ..FakeSystem::default()
        };
        sys.owners.insert(
            Inode(10),
            vec![Owner {
                process: api.clone(),
                fd: 7,
            }],
        );
        sys.owners.insert(
            Inode(20),
            vec![Owner {
                process: api,
                fd: 8,
            }],
        );
        sys.owners.insert(
            Inode(40),
            vec![Owner {
                process: worker,
                fd: 3,
            }],
        );
        sys
    }

    fn cookies(sys: &FakeSystem, filter: SocketFilter) -> Vec<u64> {
        let snap = scan(sys, &filter, &Observations::new(), SystemTime::UNIX_EPOCH).expect("scan");
        snap.sockets.iter().map(|s| s.socket.cookie.0).collect()
    }

    #[test]
    fn selectors_read_like_the_flags() {
        let all = SocketFilter::default;
        let sys = fixture();
        let cases: Vec<(&str, SocketFilter, Vec<u64>)> = vec![
            (
                "default: every stuck socket, oldest first",
                all(),
                vec![1, 2, 3, 4],
            ),
            (
                "--state close-wait",
                SocketFilter {
                    states: [TcpState::CloseWait].into_iter().collect(),
                    ..all()
                },
                vec![1, 2],
            ),
            (
                "--older-than 1m",
                SocketFilter {
                    older_than: Some(Duration::from_secs(60)),
                    ..all()
                },
                vec![1],
            ),
            (
                "--port 9090",
                SocketFilter {
                    port: Some(9090),
                    ..all()
                },
                vec![2],
            ),
            (
                "--port 40000 (remote)",
                SocketFilter {
                    port: Some(40000),
                    ..all()
                },
                vec![1, 2, 3, 4],
            ),
            (
                "--process 'wor*'",
                SocketFilter {
                    process: Some(Pattern::new("wor*").expect("glob")),
                    ..all()
                },
                vec![4],
            ),
            (
                "--unit 'api*' (orphans never match)",
                SocketFilter {
                    unit: Some(Pattern::new("api*").expect("glob")),
                    ..all()
                },
                vec![1, 2],
            ),
            (
                "--netns pod",
                SocketFilter {
                    netns: NetnsSelector::Named("pod".into()),
                    ..all()
                },
                vec![4],
            ),
            (
                "--netns host",
                SocketFilter {
                    netns: NetnsSelector::Host,
                    ..all()
                },
                vec![1, 2, 3],
            ),
            (
                "--netns <path>",
                SocketFilter {
                    netns: NetnsSelector::Path("/proc/4026532000/ns/net".into()),
                    ..all()
                },
                vec![4],
            ),
            (
                "--state listen: nothing stuck there",
                SocketFilter {
                    states: [TcpState::Listen].into_iter().collect(),
                    ..all()
                },
                vec![],
            ),
        ];
        for (what, filter, expected) in cases {
            assert_eq!(cookies(&sys, filter), expected, "{what}");
        }
    }

    #[test]
    fn owners_are_attributed_and_orphans_stay_ownerless() {
        let sys = fixture();
        let snap = scan(
            &sys,
            &SocketFilter::default(),
            &Observations::new(),
            SystemTime::UNIX_EPOCH,
        )
        .expect("scan");
        let by_cookie = |c: u64| {
            snap.sockets
                .iter()
                .find(|s| s.socket.cookie.0 == c)
                .expect("socket")
        };
        assert_eq!(by_cookie(1).owners[0].fd, 7);
        assert_eq!(
            by_cookie(1).owners[0].process.unit.as_deref(),
            Some("api.service")
        );
        assert!(by_cookie(3).owners.is_empty());
        assert_eq!(snap.netns_name(POD), "pod");
    }

    #[test]
    fn no_candidates_means_no_proc_walk() {
        let sys = fixture();
        let filter = SocketFilter {
            states: StateSet::empty(),
            ..SocketFilter::default()
        };
        let snap = scan(&sys, &filter, &Observations::new(), SystemTime::UNIX_EPOCH).expect("scan");
        assert!(!snap.owners_scanned);
        assert!(
            !sys.calls.borrow().iter().any(|c| c.starts_with("owners")),
            "{:?}",
            sys.calls.borrow()
        );
    }

    #[test]
    fn owners_read_early_cover_sockets_found_outside_what_was_expected() {
        let sys = fixture();
        // Seen a moment ago: cookies 1 and 4 (inodes 10 and 40); cookie 2 is new since.
        let expected = InodeSet::from_iter([Inode(10), Inode(40)]);
        let filter = SocketFilter::default();
        let snap = scan_with(
            &sys,
            &sys.namespaces,
            &filter,
            &Observations::new(),
            SystemTime::UNIX_EPOCH,
            OwnerPass::Expected(&expected),
        )
        .expect("scan");
        let owner_of = |cookie: u64| {
            let s = snap.sockets.iter().find(|s| s.socket.cookie.0 == cookie);
            s.map(|s| s.owners.iter().map(|o| o.fd).collect::<Vec<_>>())
        };
        assert_eq!(owner_of(1), Some(vec![7]));
        assert_eq!(
            owner_of(2),
            Some(vec![8]),
            "the unexpected socket has its owner too"
        );
        assert_eq!(owner_of(4), Some(vec![3]));
        let calls = sys.calls.borrow();
        let owner_calls: Vec<&String> = calls.iter().filter(|c| c.starts_with("owners")).collect();
        assert_eq!(
            owner_calls,
            ["owners 2", "owners 1"],
            "the expected, then the missing one"
        );
        drop(calls);
        // Alongside: the same owners as a scan that reads them after.
        let alongside = scan_with(
            &sys,
            &sys.namespaces,
            &filter,
            &Observations::new(),
            SystemTime::UNIX_EPOCH,
            OwnerPass::Alongside,
        )
        .expect("scan");
        let after =
            scan(&sys, &filter, &Observations::new(), SystemTime::UNIX_EPOCH).expect("scan");
        let owners = |snap: &Snapshot| -> Vec<(u64, Vec<i32>)> {
            snap.sockets
                .iter()
                .map(|s| (s.socket.cookie.0, s.owners.iter().map(|o| o.fd).collect()))
                .collect()
        };
        assert_eq!(owners(&alongside), owners(&after));
    }

    #[test]
    fn unknown_netns_name_is_an_error_that_says_how_to_list_them() {
        let sys = fixture();
        let filter = SocketFilter {
            netns: NetnsSelector::Named("nope".into()),
            ..SocketFilter::default()
        };
        let err = scan(&sys, &filter, &Observations::new(), SystemTime::UNIX_EPOCH)
            .expect_err("no such netns");
        assert!(err.to_string().contains("ip netns list"), "{err}");
    }

    #[test]
    fn observation_ages_sockets_without_kernel_evidence() {
        let sys = fixture();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let mut seen = Observations::new();
        seen.insert(
            (HOST, Cookie(3), TcpState::FinWait1),
            now - Duration::from_secs(900),
        );
        let snap = scan(&sys, &SocketFilter::default(), &seen, now).expect("scan");
        let orphan = snap
            .sockets
            .iter()
            .find(|s| s.socket.cookie.0 == 3)
            .expect("orphan");
        assert_eq!(
            (orphan.age.secs, orphan.age.source),
            (900, crate::model::AgeSource::Observed)
        );
    }

    #[test]
    fn the_kernel_s_entry_time_ages_a_socket_exactly_for_the_state_it_names() {
        let mut sys = fixture();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let entered = |state, secs| crate::sys::Entered {
            state,
            ago: Duration::from_secs(secs),
        };
        sys.entered
            .insert(Cookie(3), entered(TcpState::FinWait1, 4_000));
        // A stamp for another state than the socket's now says nothing about it.
        sys.entered
            .insert(Cookie(1), entered(TcpState::SynSent, 4_000));
        let snap = scan(&sys, &SocketFilter::default(), &Observations::new(), now).expect("scan");
        let age_of = |cookie: u64| {
            let s = snap
                .sockets
                .iter()
                .find(|s| s.socket.cookie.0 == cookie)
                .expect("socket");
            (s.age.secs, s.age.source, s.age.lower_bound)
        };
        assert_eq!(
            age_of(3),
            (4_000, crate::model::AgeSource::KernelTransition, false)
        );
        assert_ne!(age_of(1).1, crate::model::AgeSource::KernelTransition);
    }
}
