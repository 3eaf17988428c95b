//! Network namespaces: enumerating every namespace of the host and opening a netlink socket
//! inside one (on a dedicated thread that enters it with setns).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::netlink::DiagSocket;
use super::procfs::{container_from_cgroup, pod_uid_from_cgroup, unit_from_cgroup};
use super::{NamespaceList, SysError};
use crate::model::{Netns, NetnsId, NetnsOrigin};

/// The kernel's default `net.ipv4.tcp_fin_timeout`, used when the sysctl cannot be read.
pub(crate) const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(60);

fn id_of(m: &fs::Metadata) -> NetnsId {
    NetnsId {
        dev: m.dev(),
        inode: m.ino(),
    }
}

/// Every network namespace this process can see: the union of `/proc/<pid>/ns/net` and
/// `/run/netns/*`, de-duplicated by (dev, inode), our own namespace first as `host`.
pub fn list_namespaces() -> NamespaceList {
    list_namespaces_in(Path::new("/proc"), Path::new("/run/netns"))
}

fn list_namespaces_in(proc_root: &Path, run_netns: &Path) -> NamespaceList {
    let mut list = NamespaceList::default();
    let own = match fs::metadata(proc_root.join("thread-self/ns/net")) {
        Ok(m) => {
            let id = id_of(&m);
            list.namespaces
                .push(Netns::new(id, "host", proc_root.join("self/ns/net")));
            Some(id)
        }
        Err(e) => {
            list.warnings.push(format!(
                "cannot identify our own network namespace ({}/thread-self/ns/net: {e})",
                proc_root.display()
            ));
            None
        }
    };

    let mut pids: Vec<u32> = match fs::read_dir(proc_root) {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(e) => {
            list.warnings
                .push(format!("cannot list {}: {e}", proc_root.display()));
            Vec::new()
        }
    };
    // The lowest pid names a namespace: usually the process that created it.
    pids.sort_unstable();
    let our_uid = nix::unistd::geteuid().as_raw();
    let mut by_pid: Vec<Netns> = Vec::new();
    let mut seen: HashMap<NetnsId, usize> = HashMap::new();
    let mut denied_other_uid = 0usize;
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let path = dir.join("ns/net");
        match fs::metadata(&path) {
            Ok(m) => {
                let id = id_of(&m);
                if Some(id) == own || seen.contains_key(&id) {
                    continue;
                }
                let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
                let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
                seen.insert(id, by_pid.len());
                let mut netns = Netns::new(id, format!("pid:{pid}({})", comm.trim_end()), path);
                netns.origin = origin_of_process(pid, &cgroup);
                by_pid.push(netns);
            }
            // Denied for a process of our own uid happens too (pid 1 here): only other
            // users' processes tell us we lack the privilege.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if fs::metadata(&dir).is_ok_and(|m| m.uid() != our_uid) {
                    denied_other_uid += 1;
                }
            }
            // ENOENT: the process exited mid-scan; anything else: skip this process.
            Err(_) => {}
        }
    }

    let mut named: Vec<Netns> = Vec::new();
    let mut names: Vec<(String, PathBuf)> = match fs::read_dir(run_netns) {
        Ok(dir) => dir
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.file_name().to_str()?.to_string(), e.path()))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            list.warnings
                .push(format!("cannot list {}: {e}", run_netns.display()));
            Vec::new()
        }
    };
    names.sort();
    let mut named_ids: HashSet<NetnsId> = HashSet::new();
    for (name, path) in names {
        let Ok(m) = fs::metadata(&path) else { continue };
        let id = id_of(&m);
        // A stale file left by a failed `ip netns del` is not on nsfs: skip it.
        if own.is_some_and(|own| own.dev != id.dev) || Some(id) == own || named_ids.contains(&id) {
            continue;
        }
        named_ids.insert(id);
        let mut netns = Netns::new(id, name, path);
        // A pod's namespace pinned by its CNI plugin (`cni-<uuid>`) is best known as its pod.
        if let Some(process) = seen.get(&id).map(|&i| &by_pid[i].origin) {
            netns.origin.pod_uid = process.pod_uid.clone();
            netns.origin.container = process.container.clone();
            if process.pod_uid.is_some() {
                netns.origin.label = process.label.clone();
            }
        }
        named.push(netns);
    }
    by_pid.retain(|ns| !named_ids.contains(&ns.id));
    let others = named.len() + by_pid.len();
    list.namespaces.extend(named);
    list.namespaces.extend(by_pid);
    if let Some(w) = visibility_warning(denied_other_uid, others) {
        list.unseen.push(format!(
            "the namespaces of {denied_other_uid} process(es) of other users"
        ));
        list.warnings.push(w);
    }
    list
}

/// The namespace a path opens (`--netns PATH`), named by that path and labelled by what
/// outlives it: `/proc/<pid>/ns/net` by the process's pod, container or unit, a
/// `/run/netns` file by its name, any other file by its path.
pub fn namespace_at(path: &Path) -> Result<Netns, SysError> {
    let id = netns_id_of(path)?;
    let mut netns = Netns::new(id, path.display().to_string(), path);
    let pid = path
        .strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.iter().next()?.to_str()?.parse::<u32>().ok());
    if let Some(pid) = pid {
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        netns.origin = origin_of_process(pid, &cgroup);
    } else if let (Ok(name), Some(file)) = (path.strip_prefix("/run/netns"), path.file_name()) {
        if name.iter().count() == 1 {
            netns.origin.label = file.to_string_lossy().into_owned();
        }
    }
    Ok(netns)
}

/// Whether the namespace holds any TCP socket: [`tcp_counts`] says so.
pub fn has_tcp_sockets(ns: &Netns) -> Option<bool> {
    tcp_counts(ns).map(|c| c.in_use + c.timewait > 0)
}

/// A namespace's TCP socket counts, from its `sockstat` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounts {
    /// `inuse` of `TCP:` and `TCP6:`: hashed full sockets, every state but TIME_WAIT and
    /// the request sockets of SYN_RECV, which need a listener (itself counted).
    pub in_use: u64,
    /// `tw` of `TCP:` (both families): timewait minisockets, TIME_WAIT and orphaned
    /// FIN_WAIT_2.
    pub timewait: u64,
}

/// The namespace's TCP counts, read from the `net/sockstat` and `net/sockstat6` files of a
/// process in it, without entering it and without a dump (a dump walks every socket of the
/// host, whichever namespace it asks for). `None` when this cannot be told (a `/run/netns`
/// name, an unreadable file, or the process left the namespace while it was read).
pub fn tcp_counts(ns: &Netns) -> Option<TcpCounts> {
    let proc_dir = ns.path.parent()?.parent()?;
    if proc_dir.parent() != Some(Path::new("/proc")) {
        return None;
    }
    let still_there = || netns_id_of(&ns.path).is_ok_and(|id| id == ns.id);
    if !still_there() {
        return None;
    }
    let v4 = fs::read_to_string(proc_dir.join("net/sockstat")).ok()?;
    // No sockstat6 without IPv6: no TCP6 sockets either.
    let v6 = fs::read_to_string(proc_dir.join("net/sockstat6")).unwrap_or_default();
    let counts = TcpCounts {
        in_use: tcp_in_use(&v4, "TCP:")? + tcp_in_use(&v6, "TCP6:").unwrap_or(0),
        timewait: sockstat_field(&v4, "TCP:", "tw")?,
    };
    // Read from the process's namespace of the moment: it must still be the one we meant.
    still_there().then_some(counts)
}

/// `inuse` of the `TCP:`/`TCP6:` line of a sockstat text.
fn tcp_in_use(text: &str, protocol: &str) -> Option<u64> {
    sockstat_field(text, protocol, "inuse")
}

/// The number after `field` on the `protocol` line of a sockstat text.
fn sockstat_field(text: &str, protocol: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(protocol))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == field)?;
    words.next()?.parse().ok()
}

/// The origin of the namespace of process `pid`, from its `/proc/<pid>/cgroup` text: the
/// pod, else the container, else the systemd unit (a `PrivateNetwork=` service).
fn origin_of_process(pid: u32, cgroup: &str) -> NetnsOrigin {
    let pod_uid = pod_uid_from_cgroup(cgroup);
    let container = container_from_cgroup(cgroup);
    let label = if pid == 1 {
        "node".to_string()
    } else if let Some(uid) = &pod_uid {
        format!("pod:{uid}")
    } else if let Some(id) = &container {
        format!("container:{id}")
    } else if let Some(unit) = unit_from_cgroup(cgroup) {
        format!("unit:{unit}")
    } else {
        NetnsOrigin::OTHER.to_string()
    };
    NetnsOrigin {
        label,
        pod_uid,
        container,
    }
}

/// The warning given when other users' namespaces were hidden from us and we found none.
fn visibility_warning(denied_other_uid: usize, others_found: usize) -> Option<String> {
    (denied_other_uid > 0 && others_found == 0).then(|| {
        format!(
            "network namespaces of other processes are not visible: reading /proc/<pid>/ns/net \
             was denied for {denied_other_uid} processes of other users (run as root, or with \
             CAP_SYS_PTRACE)"
        )
    })
}

/// The network namespace of the calling thread.
pub fn own_netns_id() -> Result<NetnsId, SysError> {
    netns_id_of(Path::new("/proc/thread-self/ns/net"))
}

/// The identity of the namespace a path (`/proc/<pid>/ns/net`, `/run/netns/NAME`) opens.
pub fn netns_id_of(path: &Path) -> Result<NetnsId, SysError> {
    fs::metadata(path)
        .map(|m| id_of(&m))
        .map_err(|e| SysError::new(format!("stat({})", path.display()), e))
}

/// Run `f` on a new thread that has entered the network namespace at `path`. The thread
/// ends afterwards, so the caller's namespace never changes. A panic in `f` is propagated.
pub fn run_in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SysError> {
    run_in_netns_checked(path, None, f)
}

/// [`run_in_netns`], refusing to run when `path` no longer opens the namespace `expected`
/// (`/proc/<pid>/ns/net` after the process exited and its pid was reused).
fn run_in_netns_checked<T: Send + 'static>(
    path: &Path,
    expected: Option<NetnsId>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SysError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| {
        let err = SysError::new(format!("open({shown})"), e);
        match err.errno() {
            Some(libc::EACCES) | Some(libc::EPERM) => {
                err.with_hint("needs root (or CAP_SYS_PTRACE) to open another process's namespace")
            }
            Some(libc::ENOENT) => err.with_hint("the process or namespace is gone"),
            _ => err,
        }
    })?;
    if let Some(expected) = expected {
        let found = file
            .metadata()
            .map(|m| id_of(&m))
            .map_err(|e| SysError::new(format!("fstat({shown})"), e))?;
        if found != expected {
            return Err(SysError::new(
                format!("open({shown})"),
                io::Error::from_raw_os_error(libc::ESTALE),
            )
            .with_hint(format!(
                "it now opens {found}, not {expected}: the process that held the namespace exited"
            )));
        }
    }
    let thread_shown = shown.clone();
    let handle = std::thread::Builder::new()
        .name("sockwarden-netns".into())
        .spawn(move || -> Result<T, SysError> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                let err = SysError::new(format!("setns({thread_shown}, CLONE_NEWNET)"), e.into());
                match e {
                    nix::errno::Errno::EPERM => {
                        err.with_hint("needs CAP_SYS_ADMIN to enter another network namespace")
                    }
                    nix::errno::Errno::EINVAL => err.with_hint("not a network namespace file"),
                    _ => err,
                }
            })?;
            drop(file);
            Ok(f())
        })
        .map_err(|e| SysError::new(format!("spawn a thread to enter {shown}"), e))?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `net.ipv4.tcp_fin_timeout` of one namespace, read again every time it is asked for (an
/// operator may change it while the daemon runs). The file is opened inside the namespace:
/// /proc/sys/net shows the namespace of whoever opened it, and an open file keeps showing
/// that one.
#[derive(Debug)]
pub struct FinTimeout(Option<File>);

impl FinTimeout {
    /// Open it for the calling thread's namespace.
    fn open_here() -> FinTimeout {
        FinTimeout(File::open("/proc/sys/net/ipv4/tcp_fin_timeout").ok())
    }

    /// The current value; 60 s (the kernel's default) if it cannot be read.
    pub fn read(&self) -> Duration {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        self.0
            .as_ref()
            .and_then(|f| f.read_at(&mut buf, 0).ok())
            .and_then(|n| {
                std::str::from_utf8(&buf[..n])
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(DEFAULT_FIN_TIMEOUT, Duration::from_secs)
    }
}

/// A sock_diag socket bound to `netns`, and that namespace's `tcp_fin_timeout`. Opened
/// directly when `netns` is our own (`own`), else on a thread that enters it: a netlink
/// socket stays bound to the namespace it was created in.
pub fn open_diag_socket_in(
    netns: &Netns,
    own: NetnsId,
) -> Result<(DiagSocket, FinTimeout), SysError> {
    if netns.id == own {
        return Ok((DiagSocket::open()?, FinTimeout::open_here()));
    }
    let (socket, fin) = run_in_netns_checked(&netns.path, Some(netns.id), || {
        (DiagSocket::open(), FinTimeout::open_here())
    })
    .map_err(|e| SysError {
        call: format!("{} (netns {})", e.call, netns.name),
        ..e
    })?;
    Ok((socket?, fin))
}

/// A private network namespace for real-kernel tests, with `lo` up. It lives as long as
/// this value (the open nsfs file) or any socket created inside it.
#[cfg(test)]
pub(crate) mod testns {
    use std::fs::File;
    use std::os::fd::{AsFd, AsRawFd};
    use std::path::PathBuf;

    use nix::sched::{unshare, CloneFlags};

    use super::{netns_id_of, run_in_netns};
    use crate::model::{Netns, NetnsId};

    pub(crate) struct TestNetns {
        file: File,
        pub(crate) id: NetnsId,
    }

    impl TestNetns {
        pub(crate) fn new() -> TestNetns {
            let file = std::thread::spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET)
                    .expect("unshare(CLONE_NEWNET): tests run as root");
                loopback_up();
                File::open("/proc/thread-self/ns/net").expect("open our new netns")
            })
            .join()
            .expect("netns thread");
            let id = super::id_of(&file.metadata().expect("fstat netns"));
            let ns = TestNetns { file, id };
            assert_eq!(netns_id_of(&ns.path()).expect("stat netns path"), id);
            ns
        }

        /// A path that opens this namespace while `self` lives.
        pub(crate) fn path(&self) -> PathBuf {
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }

        pub(crate) fn netns(&self) -> Netns {
            Netns::new(self.id, "test", self.path())
        }

        /// Run `f` inside the namespace (sockets created there stay there).
        pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            run_in_netns(&self.path(), f).expect("enter test netns")
        }
    }

    /// `ip link set lo up`, by ioctl on a socket of the current namespace.
    fn loopback_up() {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket for ioctl");
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let fd = sock.as_fd().as_raw_fd();
        // SAFETY: fd is a live socket and ifr a valid ifreq for SIOCGIFFLAGS.
        let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) };
        assert_eq!(
            rc,
            0,
            "SIOCGIFFLAGS lo: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above, for SIOCSIFFLAGS.
        let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) };
        assert_eq!(
            rc,
            0,
            "SIOCSIFFLAGS lo: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::testns::TestNetns;
    use super::*;

    /// A fake /proc and /run/netns in a temp dir: plain files stand in for nsfs files.
    #[test]
    fn list_dedups_names_and_orders() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let proc_root = root.join("proc");
        let run = root.join("run/netns");
        fs::create_dir_all(&run).expect("mkdir");
        for ns in ["ns_host", "ns_a", "ns_b"] {
            fs::write(root.join(ns), "").expect("write");
        }
        let add = |dir: &str, target: &str, comm: &str| {
            let d = proc_root.join(dir);
            fs::create_dir_all(d.join("ns")).expect("mkdir");
            symlink(root.join(target), d.join("ns/net")).expect("symlink");
            fs::write(d.join("comm"), format!("{comm}\n")).expect("write comm");
        };
        add("thread-self", "ns_host", "");
        add("12", "ns_host", "agent");
        add("7", "ns_a", "worker");
        add("5", "ns_a", "runc");
        add("9", "ns_b", "db");
        add("30", "ns_gone", "exited"); // dangling: ENOENT, skipped silently
        symlink(root.join("ns_b"), run.join("blue")).expect("symlink");
        symlink(root.join("ns_b"), run.join("zeta")).expect("symlink"); // same ns, later name
        symlink(root.join("ns_host"), run.join("default")).expect("symlink"); // host stays host

        let list = list_namespaces_in(&proc_root, &run);
        let id = |f: &str| id_of(&fs::metadata(root.join(f)).expect("stat"));
        let got: Vec<(NetnsId, &str, PathBuf)> = list
            .namespaces
            .iter()
            .map(|n| (n.id, n.name.as_str(), n.path.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (id("ns_host"), "host", proc_root.join("self/ns/net")),
                (id("ns_b"), "blue", run.join("blue")),
                (id("ns_a"), "pid:5(runc)", proc_root.join("5/ns/net")),
            ]
        );
        assert!(list.warnings.is_empty(), "{:?}", list.warnings);
    }

    #[test]
    fn namespaces_are_labelled_by_what_outlives_their_processes() {
        const UID: &str = "0f4c1a2b-3d4e-4f50-8a6b-7c8d9e0f1a2b";
        const CID: &str = "3f2c5e8a9b1d4c6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6";
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let proc_root = root.join("proc");
        let run = root.join("run/netns");
        fs::create_dir_all(&run).expect("mkdir");
        let add = |pid: &str, ns: &str, cgroup: &str| {
            fs::write(root.join(ns), "").expect("write");
            let d = proc_root.join(pid);
            fs::create_dir_all(d.join("ns")).expect("mkdir");
            symlink(root.join(ns), d.join("ns/net")).expect("symlink");
            fs::write(d.join("comm"), "x\n").expect("write comm");
            if !cgroup.is_empty() {
                fs::write(d.join("cgroup"), cgroup).expect("write cgroup");
            }
        };
        let pod_cgroup = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope\n",
            UID.replace('-', "_")
        );
        add("thread-self", "ns_own", "");
        add("1", "ns_node", "0::/init.scope\n");
        add("5", "ns_pod", &pod_cgroup);
        add(
            "9",
            "ns_docker",
            &format!("0::/system.slice/docker-{CID}.scope\n"),
        );
        add("11", "ns_unit", "0::/system.slice/isolated.service\n");
        add("13", "ns_bare", "");
        add("15", "ns_pinned", &pod_cgroup);
        symlink(root.join("ns_pinned"), run.join("cni-1234")).expect("symlink");

        let list = list_namespaces_in(&proc_root, &run);
        let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = list
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.origin.label.as_str(),
                    n.origin.pod_uid.as_deref(),
                    n.origin.container.as_deref(),
                )
            })
            .collect();
        let pod = format!("pod:{UID}");
        let docker = format!("container:{}", &CID[..12]);
        let cid = Some(&CID[..12]);
        assert_eq!(
            got,
            vec![
                ("host", "host", None, None),
                ("cni-1234", pod.as_str(), Some(UID), cid),
                ("pid:1(x)", "node", None, None),
                ("pid:5(x)", pod.as_str(), Some(UID), cid),
                ("pid:9(x)", docker.as_str(), None, cid),
                ("pid:11(x)", "unit:isolated.service", None, None),
                ("pid:13(x)", "other", None, None),
            ]
        );
    }

    /// A `sleep 60` child in a new network namespace, once it is there: (child, its
    /// `/proc/<pid>/ns/net`, the namespace).
    fn sleeper_in_new_netns() -> (std::process::Child, PathBuf, NetnsId) {
        let own = own_netns_id().expect("own");
        let child = Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare --net sleep 60");
        let pid = child.id();
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // unshare(1) execs sleep after unsharing: wait until both happened.
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match netns_id_of(&path) {
                Ok(id) if id != own && comm.trim() == "sleep" => return (child, path, id),
                _ if Instant::now() > deadline => panic!("child never entered a new netns"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    #[test]
    fn tcp_in_use_reads_the_sockstat_line() {
        let v4 =
            "sockets: used 291\nTCP: inuse 7 orphan 0 tw 3 alloc 12 mem 2\nUDP: inuse 2 mem 1\n";
        let v6 = "TCP6: inuse 0\nUDP6: inuse 1\n";
        assert_eq!(tcp_in_use(v4, "TCP:"), Some(7));
        assert_eq!(tcp_in_use(v6, "TCP6:"), Some(0));
        assert_eq!(tcp_in_use(v4, "TCP6:"), None);
        assert_eq!(tcp_in_use("TCP: inuse x\n", "TCP:"), None);
        assert_eq!(sockstat_field(v4, "TCP:", "tw"), Some(3));
    }

    #[test]
    fn has_tcp_sockets_tells_an_empty_namespace_from_one_with_a_socket() {
        let own = own_netns_id().expect("own");
        let (mut child, path, id) = sleeper_in_new_netns();
        let ns = Netns::new(id, "test", path.clone());
        let empty = has_tcp_sockets(&ns);
        // A listener in it (IPv6 too: sockstat6 counts it).
        let listener = run_in_netns(&path, || {
            crate::sys::probe::bring_loopback_up().expect("lo up");
            std::net::TcpListener::bind("[::1]:0").expect("bind")
        })
        .expect("enter");
        let one = has_tcp_sockets(&ns);
        // A namespace it is not (the id differs): cannot tell.
        let wrong = has_tcp_sockets(&Netns::new(own, "wrong", path));
        drop(listener);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(empty, Some(false));
        assert_eq!(one, Some(true));
        assert_eq!(wrong, None);
        // A /run/netns path is not a process's: dump it.
        assert_eq!(has_tcp_sockets(&Netns::new(own, "x", "/run/netns/x")), None);
    }

    #[test]
    fn missing_run_netns_is_normal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let list = list_namespaces_in(Path::new("/proc"), &tmp.path().join("absent"));
        assert_eq!(list.namespaces[0].name, "host");
        assert_eq!(list.namespaces[0].id, own_netns_id().expect("own netns"));
        assert!(list.warnings.is_empty(), "{:?}", list.warnings);
    }

    #[test]
    fn warning_only_when_other_users_hidden_and_nothing_found() {
        assert_eq!(visibility_warning(0, 0), None);
        assert_eq!(visibility_warning(3, 1), None);
        let w = visibility_warning(3, 0).expect("warning");
        assert!(
            w.contains("not visible") && w.contains("CAP_SYS_PTRACE"),
            "{w}"
        );
    }

    #[test]
    fn run_in_netns_enters_and_leaves_caller_alone() {
        let ns = TestNetns::new();
        let before = own_netns_id().expect("own");
        let inside = run_in_netns(&ns.path(), || own_netns_id().expect("inside")).expect("run");
        assert_eq!(inside, ns.id);
        assert_ne!(inside, before);
        assert_eq!(own_netns_id().expect("own"), before);
    }

    #[test]
    fn run_in_netns_errors_name_the_call() {
        let err = run_in_netns(Path::new("/nonexistent/ns"), || ()).expect_err("no such file");
        assert!(
            err.to_string().starts_with("open(/nonexistent/ns)"),
            "{err}"
        );
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let err = run_in_netns(tmp.path(), || ()).expect_err("not a namespace");
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(
            err.to_string().contains("setns(")
                && err.to_string().contains("not a network namespace"),
            "{err}"
        );
    }

    #[test]
    fn stale_proc_path_is_refused() {
        let ns = TestNetns::new();
        let own = own_netns_id().expect("own");
        // The path now opens ns.id, but the scan saw `own` there: the holder was replaced.
        let wrong = Netns::new(own, "pid:1(x)", ns.path());
        let err = run_in_netns_checked(&wrong.path, Some(wrong.id), || ()).expect_err("stale");
        assert_eq!(err.errno(), Some(libc::ESTALE), "{err}");
    }

    #[test]
    fn diag_socket_in_other_netns_sees_its_sockets_and_fin_timeout() {
        let ns = TestNetns::new();
        let own = own_netns_id().expect("own");
        let listener = ns.run(|| {
            fs::write("/proc/sys/net/ipv4/tcp_fin_timeout", "17")
                .expect("set fin timeout in test ns");
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
        });
        let port = listener.local_addr().expect("addr").port();
        let (mut sock, fin) = open_diag_socket_in(&ns.netns(), own).expect("open inside");
        assert_eq!(fin.read(), Duration::from_secs(17));
        // Regression (house-in-order issue): read once for the daemon's life, a changed
        // value was never seen.
        ns.run(|| {
            fs::write("/proc/sys/net/ipv4/tcp_fin_timeout", "23").expect("change it");
        });
        assert_eq!(
            fin.read(),
            Duration::from_secs(23),
            "read again, in its namespace"
        );
        assert_ne!(
            FinTimeout::open_here().read(),
            Duration::from_secs(23),
            "not ours"
        );
        let listen = crate::model::StateSet::from_iter([crate::model::TcpState::Listen]);
        let found = sock.dump(ns.id, listen).expect("dump");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].local.port(), port);
        // Our own namespace: opened directly, the default (or host) timeout.
        let host = Netns::new(own, "host", "/proc/self/ns/net");
        let (mut host_sock, _) = open_diag_socket_in(&host, own).expect("open host");
        let host_found = host_sock.dump(own, listen).expect("dump host");
        assert!(host_found.iter().all(|s| s.netns == own));
        assert!(!host_found
            .iter()
            .any(|s| s.local == found[0].local && s.cookie == found[0].cookie));
    }

    #[test]
    fn lists_namespace_of_a_spawned_child() {
        let own = own_netns_id().expect("own");
        let (mut child, path, child_ns) = sleeper_in_new_netns();
        let pid = child.id();
        let list = list_namespaces();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(list.namespaces[0].name, "host");
        assert_eq!(list.namespaces[0].id, own);
        let found = list
            .namespaces
            .iter()
            .find(|n| n.id == child_ns)
            .expect("child netns listed");
        assert_eq!(found.name, format!("pid:{pid}(sleep)"));
        assert_eq!(found.path, path);
        let ids: HashSet<NetnsId> = list.namespaces.iter().map(|n| n.id).collect();
        assert_eq!(
            ids.len(),
            list.namespaces.len(),
            "duplicates in {:?}",
            list.namespaces
        );
    }
}
