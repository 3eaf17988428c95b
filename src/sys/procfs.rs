//! The owner map: one pass over `/proc/<pid>/fd` turning socket inodes into processes, with
//! each process's start time, command, uid, systemd unit and container.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::dir::Dir;
use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::sys::stat::Mode;

use super::syscall::{check, pidfd_open, pidfd_send_signal};
use super::{HolderCheck, OwnerScan};
use crate::model::{Inode, InodeSet, Owner, Pid, Process, ProcessHandle, ProcessId};

/// The fields of `/proc/<pid>/stat` sockwarden uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// `comm`, between the first `(` and the last `)`.
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z`, …
    pub state: char,
    /// Field 22: clock ticks since boot when the process started.
    pub start_time: u64,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);
const FILE_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_CLOEXEC);

/// Attribute `wanted` socket inodes to the processes holding them, walking the real `/proc`.
pub fn scan_owners(wanted: &InodeSet) -> OwnerScan {
    scan_in(Path::new("/proc"), wanted, true)
}

/// [`scan_owners`] over any directory laid out like `/proc` (tests use a fake tree).
///
/// Each process is read through one directory fd on `<proc_root>/<pid>`: the kernel ties
/// that fd to the process, so if the pid is reused mid-scan, reads fail instead of
/// describing the newcomer.
pub fn scan_owners_at(proc_root: &Path, wanted: &InodeSet) -> OwnerScan {
    scan_in(proc_root, wanted, false)
}

/// The scan; `handles`: take a pidfd on each owner (only meaningful on the real `/proc`,
/// whose pids are this pid namespace's).
fn scan_in(proc_root: &Path, wanted: &InodeSet, handles: bool) -> OwnerScan {
    let mut scan = OwnerScan::default();
    if wanted.is_empty() {
        return scan;
    }
    let (root, pids) = match list_pids(proc_root) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                "cannot list {}: {e}; no socket owners known",
                proc_root.display()
            );
            return scan;
        }
    };
    // Nearly all the time is spent in the kernel (readdir and readlink of each fd), and the
    // fd tables of different processes do not contend: spread processes over a few threads.
    let next = AtomicUsize::new(0);
    let work = || scan_some(&root, &pids, &next, wanted, handles);
    let parts: Vec<Partial> = match worker_count(pids.len()) {
        0 | 1 => vec![work()],
        n => std::thread::scope(|s| {
            let helpers: Vec<_> = (1..n)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .name("owner-scan".into())
                        .spawn_scoped(s, work)
                        .ok()
                })
                .collect();
            let mut parts = vec![work()];
            // A helper that panicked loses only the processes it had claimed.
            parts.extend(helpers.into_iter().filter_map(|h| h.join().ok()));
            parts
        }),
    };
    scan.processes_scanned = pids.len();
    merge(scan, parts)
}

/// The owners the parts found, each socket's holders in (pid, fd) order.
fn merge(mut scan: OwnerScan, parts: Vec<Partial>) -> OwnerScan {
    let found = parts.iter().map(|p| p.owners.len()).sum();
    scan.owners.reserve(found);
    for part in parts {
        for (inode, owner) in part.owners {
            scan.owners
                .entry(inode)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(owner);
        }
        scan.unreadable.extend(part.unreadable);
    }
    for owners in scan.owners.values_mut() {
        if owners.len() > 1 {
            owners.sort_by_key(|o| (o.process.id.pid, o.fd));
        }
    }
    scan.unreadable.sort_by_key(|(pid, _)| *pid);
    scan
}

/// The owners of what the eBPF task_file iterator found (each holder's pid, start time, fd
/// and inode): only the holders' own `/proc/<pid>` is read, for their details and a
/// handle. A holder whose pid now has another start time exited after the kernel's pass
/// (its pid was reused): it is left out, as a process that exits mid-walk is.
pub fn owners_of_holders(holders: &[super::bpf::Holder]) -> OwnerScan {
    let mut scan = OwnerScan::default();
    let root = match open(Path::new("/proc"), DIR_FLAGS, Mode::empty()) {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!("cannot open /proc: {e}; no socket owners known");
            return scan;
        }
    };
    let mut by_pid: Vec<&super::bpf::Holder> = holders.iter().collect();
    by_pid.sort_by_key(|h| (h.pid, h.fd));
    let processes: Vec<&[&super::bpf::Holder]> = by_pid.chunk_by(|a, b| a.pid == b.pid).collect();
    scan.processes_scanned = processes.len();
    // Each process's reads are its own: the cores share them out.
    let next = AtomicUsize::new(0);
    let parts = std::thread::scope(|s| {
        let workers: Vec<_> = (1..worker_count(processes.len()))
            .map(|_| s.spawn(|| read_holders(&root, &processes, &next)))
            .collect();
        let mut parts = vec![read_holders(&root, &processes, &next)];
        parts.extend(workers.into_iter().filter_map(|w| w.join().ok()));
        parts
    });
    merge(scan, parts)
}

/// Read the details of `processes` (each one's holders of wanted sockets), claiming them
/// one at a time through `next`.
fn read_holders(
    root: &OwnedFd,
    processes: &[&[&super::bpf::Holder]],
    next: &AtomicUsize,
) -> Partial {
    let mut part = Partial::default();
    while let Some(same) = processes.get(next.fetch_add(1, Ordering::Relaxed)) {
        let first = same[0];
        let pid = first.pid.0;
        let pid_dir = match open_pid_dir(root, pid) {
            Ok(dir) => dir,
            Err(e) => {
                note_error(&mut part, pid, e);
                continue;
            }
        };
        // As in the walk: the handle first, then the details through the directory fd.
        let handle = match pidfd_open(pid) {
            Ok(fd) => ProcessHandle::new(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(_) => ProcessHandle::none(),
        };
        let process = match read_process_dir(pid_dir.as_fd(), Pid(pid), handle) {
            Ok(p) if p.id.start_time == first.start_time => Arc::new(p),
            Ok(_) => continue, // another process has that pid now
            Err(e) => {
                note_error(&mut part, pid, e);
                continue;
            }
        };
        part.owners.extend(same.iter().map(|h| {
            (
                h.inode,
                Owner {
                    process: Arc::clone(&process),
                    fd: h.fd,
                },
            )
        }));
    }
    part
}

/// What one scanning thread found.
#[derive(Default)]
struct Partial {
    owners: Vec<(Inode, Owner)>,
    unreadable: Vec<(Pid, io::ErrorKind)>,
}

/// One thread for up to ~32 processes, at most 4 (the cost is in the kernel, per fd).
fn worker_count(processes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(4).min(processes.div_ceil(32))
}

/// Claim processes from `pids` one at a time (through `next`) until none are left.
fn scan_some(
    root: &OwnedFd,
    pids: &[i32],
    next: &AtomicUsize,
    wanted: &InodeSet,
    handles: bool,
) -> Partial {
    let mut part = Partial::default();
    // Reused for every process: the hot loop (one readlinkat per fd) allocates nothing.
    let mut matches: Vec<(Inode, i32)> = Vec::new();
    while let Some(&pid) = pids.get(next.fetch_add(1, Ordering::Relaxed)) {
        matches.clear();
        let pid_dir = match open_pid_dir(root, pid) {
            Ok(dir) => dir,
            Err(e) => {
                note_error(&mut part, pid, e);
                continue;
            }
        };
        if let Err(e) = socket_fds(&pid_dir, wanted, &mut matches) {
            note_error(&mut part, pid, e);
            continue;
        }
        if matches.is_empty() {
            continue;
        }
        // The handle first, then the details through the directory fd: if they read, the
        // process was alive after the pidfd was opened, so the pidfd is that process.
        let handle = match handles.then(|| pidfd_open(pid)) {
            Some(Ok(fd)) => ProcessHandle::new(fd),
            Some(Err(e)) if e.raw_os_error() == Some(libc::ESRCH) => continue, // exited meanwhile
            Some(Err(_)) | None => ProcessHandle::none(),
        };
        let process = match read_process_dir(pid_dir.as_fd(), Pid(pid), handle) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                note_error(&mut part, pid, e);
                continue;
            }
        };
        part.owners.extend(matches.iter().map(|&(inode, fd)| {
            (
                inode,
                Owner {
                    process: Arc::clone(&process),
                    fd,
                },
            )
        }));
    }
    part
}

/// A process that exited mid-scan is normal and silent; anything else is worth reporting.
fn note_error(part: &mut Partial, pid: i32, e: io::Error) {
    if !is_gone(&e) {
        part.unreadable.push((Pid(pid), e.kind()));
    }
}

/// ENOENT/ESRCH under `/proc`: the process (or the fd) went away.
fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
        || e.kind() == io::ErrorKind::NotFound
}

/// Open `proc_root` and list its numeric entries (thread-group leaders only: threads share
/// the fd table and readdir of `/proc` does not list them).
fn list_pids(proc_root: &Path) -> io::Result<(OwnedFd, Vec<i32>)> {
    let root = open(proc_root, DIR_FLAGS, Mode::empty())?;
    let mut dir = Dir::openat(&root, ".", DIR_FLAGS, Mode::empty())?;
    let mut pids = Vec::with_capacity(1024);
    for entry in dir.iter() {
        if let Some(pid) = parse_decimal(entry?.file_name().to_bytes()) {
            if let Ok(pid) = i32::try_from(pid) {
                pids.push(pid);
            }
        }
    }
    Ok((root, pids))
}

fn open_pid_dir(root: &OwnedFd, pid: i32) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 16];
    let name = format_pid(pid, &mut buf)?;
    Ok(openat(root, name, DIR_FLAGS, Mode::empty())?)
}

/// Decimal `pid` into `buf`, without allocating.
fn format_pid(pid: i32, buf: &mut [u8; 16]) -> io::Result<&str> {
    let mut cursor = io::Cursor::new(&mut buf[..]);
    write!(cursor, "{pid}")?;
    let len = usize::try_from(cursor.position()).map_err(|_| io::ErrorKind::InvalidData)?;
    std::str::from_utf8(&buf[..len]).map_err(|_| io::ErrorKind::InvalidData.into())
}

/// Append `(inode, fd)` for every fd of this process that is a wanted socket.
fn socket_fds(pid_dir: &OwnedFd, wanted: &InodeSet, out: &mut Vec<(Inode, i32)>) -> io::Result<()> {
    let mut fd_dir = Dir::openat(pid_dir, "fd", DIR_FLAGS, Mode::empty())?;
    let dir_fd = fd_dir.as_raw_fd();
    // `socket:[18446744073709551615]` is 29 bytes; anything longer is not a socket.
    let mut link = [0u8; 64];
    for entry in fd_dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        let Some(fd) = parse_decimal(name.to_bytes()).and_then(|n| i32::try_from(n).ok()) else {
            continue; // `.` and `..`
        };
        let len = match readlink_raw(dir_fd, name, &mut link) {
            Ok(len) => len,
            Err(e) if is_gone(&e) => continue, // closed since readdir
            Err(e) => return Err(e),
        };
        if let Some(inode) = link.get(..len).and_then(parse_socket_link) {
            if wanted.contains(&Inode(inode)) {
                out.push((Inode(inode), fd));
            }
        }
    }
    Ok(())
}

/// `readlinkat(2)` into a caller's buffer (nix's version allocates an `OsString` per call).
fn readlink_raw(dir_fd: RawFd, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `buf` is valid for writes of
    // `buf.len()` bytes and readlinkat writes at most that many.
    let n = check(unsafe {
        libc::readlinkat(dir_fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `socket:[12345]` => 12345.
fn parse_socket_link(link: &[u8]) -> Option<u64> {
    parse_decimal(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
}

/// An unsigned decimal with no sign, spaces or leading `+`; `None` on anything else.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Read one process's details from the real `/proc`.
pub fn read_process(pid: Pid) -> io::Result<Process> {
    read_process_at(Path::new("/proc"), pid)
}

/// [`read_process`] under any directory laid out like `/proc`.
pub fn read_process_at(proc_root: &Path, pid: Pid) -> io::Result<Process> {
    let root = open(proc_root, DIR_FLAGS, Mode::empty())?;
    let dir = open_pid_dir(&root, pid.0)?;
    read_process_dir(dir.as_fd(), pid, ProcessHandle::none())
}

fn read_process_dir(dir: BorrowedFd<'_>, pid: Pid, handle: ProcessHandle) -> io::Result<Process> {
    let stat = read_text(dir, "stat")?;
    let stat = parse_stat(&stat).ok_or_else(|| invalid(pid, "stat"))?;
    let status = read_text(dir, "status")?;
    let uid = parse_effective_uid(&status).ok_or_else(|| invalid(pid, "status"))?;
    let cmdline = cmdline_from_raw(&read_bytes(dir, "cmdline")?);
    let cgroup = read_text(dir, "cgroup")?;
    // Kernel threads have no exe, and other users' exe links need ptrace access: not fatal.
    let exe = readlinkat(dir, "exe")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    Ok(Process {
        id: ProcessId {
            pid,
            start_time: stat.start_time,
        },
        comm: stat.comm,
        cmdline,
        exe,
        uid,
        unit: unit_from_cgroup(&cgroup),
        container: container_from_cgroup(&cgroup),
        handle,
    })
}

/// Whether `process` — the very process its handle was taken on, not whatever holds its
/// pid now — is alive and still holds one of `inodes`, and its unit now.
///
/// `/proc/<pid>` is opened first and the pidfd asked after whether its process lives: if
/// it does, it held that pid all along, so the directory is its. The fd table is then read
/// through that directory.
pub fn check_holder(process: &Process, inodes: &[Inode]) -> HolderCheck {
    let Some(pidfd) = process.handle.pidfd() else {
        return HolderCheck::NoHandle;
    };
    let dir = match open(Path::new("/proc"), DIR_FLAGS, Mode::empty())
        .map_err(io::Error::from)
        .and_then(|root| open_pid_dir(&root, process.id.pid.0))
    {
        Ok(dir) => Some(dir),
        Err(e) if is_gone(&e) => None,
        Err(e) => return HolderCheck::Failed(format!("open /proc/{}: {e}", process.id.pid)),
    };
    match pidfd_send_signal(pidfd, None) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return HolderCheck::Exited,
        // Alive, but we may not signal it: the signal itself will say so.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return HolderCheck::Failed(format!("pidfd_send_signal(0): {e}")),
    }
    let Some(dir) = dir else {
        return HolderCheck::Exited;
    };
    match read_stat_in(dir.as_fd()) {
        Ok(stat) if stat.state == 'Z' || stat.state == 'X' => return HolderCheck::Exited,
        Ok(_) => {}
        Err(e) if is_gone(&e) => return HolderCheck::Exited,
        Err(e) => return HolderCheck::Failed(format!("read /proc/{}/stat: {e}", process.id.pid)),
    }
    let wanted: InodeSet = inodes.iter().copied().collect();
    let mut held = Vec::new();
    if let Err(e) = socket_fds(&dir, &wanted, &mut held) {
        return if is_gone(&e) {
            HolderCheck::Exited
        } else {
            HolderCheck::Failed(format!("read /proc/{}/fd: {e}", process.id.pid))
        };
    }
    if held.is_empty() {
        return HolderCheck::NoLongerHolds;
    }
    let unit = read_text(dir.as_fd(), "cgroup")
        .ok()
        .and_then(|c| unit_from_cgroup(&c));
    HolderCheck::Holds { unit }
}

fn read_stat_in(dir: BorrowedFd<'_>) -> io::Result<ProcStat> {
    let text = read_text(dir, "stat")?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected format of stat"))
}

fn invalid(pid: Pid, file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected format in /proc/{pid}/{file}"),
    )
}

fn read_bytes(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<u8>> {
    let mut file = File::from(openat(dir, name, FILE_FLAGS, Mode::empty())?);
    let mut buf = Vec::with_capacity(512);
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_text(dir: BorrowedFd<'_>, name: &str) -> io::Result<String> {
    let bytes = read_bytes(dir, name)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// NUL-separated arguments => one line joined by spaces (empty for kernel threads).
fn cmdline_from_raw(raw: &[u8]) -> String {
    let trimmed = match raw.iter().rposition(|&b| b != 0) {
        Some(last) => &raw[..=last],
        None => return String::new(),
    };
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a live process.
pub fn start_time(pid: Pid) -> io::Result<u64> {
    Ok(read_stat(pid)?.start_time)
}

/// Read and parse `/proc/<pid>/stat`. A command name that is not UTF-8 is read lossily:
/// the numbered fields after it are what matter.
pub fn read_stat(pid: Pid) -> io::Result<ProcStat> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_stat(&String::from_utf8_lossy(&bytes)).ok_or_else(|| invalid(pid, "stat"))
}

/// Parse `/proc/<pid>/stat`. `comm` may contain spaces and parentheses, so the numbered
/// fields are counted from after the LAST `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // `fields` now starts at field 4; field 22 is 18 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        start_time,
    })
}

/// The effective uid: second number on the `Uid:` line of `/proc/<pid>/status`.
fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The cgroup path systemd manages: the `name=systemd` line on hybrid hierarchies, else the
/// unified (`0::`) line.
/// The cgroup paths systemd may have written the unit into, best first: the `name=systemd`
/// hierarchy (hybrid and v1 hosts), then the unified one. On a hybrid host whose unified
/// tree is managed by another systemd (a container's), only the unified path names the unit.
fn systemd_cgroup_paths(text: &str) -> impl Iterator<Item = &str> {
    let mut named = None;
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "name=systemd") {
            named = Some(path);
        } else if controllers.is_empty() && line.starts_with("0:") {
            unified = Some(path);
        }
    }
    named.into_iter().chain(unified)
}

/// The systemd unit owning a process, from the text of `/proc/<pid>/cgroup`: the deepest
/// path component ending in `.service` or `.scope`, as systemd wrote it (escapes kept).
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    let is_unit = |c: &&str| {
        (c.ends_with(".service") && c.len() > ".service".len())
            || (c.ends_with(".scope") && c.len() > ".scope".len())
    };
    systemd_cgroup_paths(text)
        .find_map(|path| path.split('/').rev().find(is_unit))
        .map(str::to_string)
}

/// The Kubernetes pod uid named by a cgroup path: `kubepods-<qos>-pod<uid>.slice` (the
/// systemd cgroup driver writes the uid's dashes as underscores) or `/kubepods/<qos>/pod<uid>/`
/// (the cgroupfs driver). Lower-case, with dashes, as `kubectl get pod -o jsonpath='{.metadata.uid}'`.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    let is_uid = |s: &str| {
        s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| {
                matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
            })
    };
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let found = path.split('/').rev().find_map(|component| {
            let component = component.strip_suffix(".slice").unwrap_or(component);
            let (_, uid) = component.rsplit_once("pod")?;
            let uid = uid.replace('_', "-");
            is_uid(&uid).then_some(uid)
        });
        if let Some(uid) = found {
            return Some(uid.to_ascii_lowercase());
        }
    }
    None
}

/// A container id (shortened to 12 hex digits, as `docker ps` shows it) named by the cgroup
/// path: `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, or a bare 64-hex component as in `/docker/<id>` and `/kubepods/…/<id>`.
pub fn container_from_cgroup(text: &str) -> Option<String> {
    const PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let found = path.split('/').rev().find_map(|component| {
            if is_id(component) {
                return Some(component);
            }
            let inner = component.strip_suffix(".scope")?;
            PREFIXES
                .iter()
                .find_map(|p| inner.strip_prefix(p))
                .filter(|id| is_id(id))
        });
        if let Some(id) = found {
            return Some(id[..12].to_ascii_lowercase());
        }
    }
    None
}

/// This process's peak resident set so far, in KiB (`VmHWM`), for debug lines that follow
/// where memory goes; 0 when it cannot be read.
pub fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This process's own figures for the `process_*` metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnStats {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_secs: f64,
}

/// Read [`OwnStats`] from `/proc/self` (`None` when `/proc` cannot be read).
pub fn own_process_stats() -> Option<OwnStats> {
    use nix::unistd::{sysconf, SysconfVar};
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten()? as f64;
    let page = u64::try_from(sysconf(SysconfVar::PAGE_SIZE).ok().flatten()?).ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the comm's closing parenthesis, from field 3 (state) on.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_ascii_whitespace()
        .collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime, start, rss) = (field(14)?, field(15)?, field(22)?, field(24)?);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    Some(OwnStats {
        cpu_secs: (utime + stime) as f64 / ticks,
        rss_bytes: rss * page,
        open_fds,
        max_fds,
        start_time_secs: boot as f64 + start as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;

    const ID: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn unit_from_cgroup_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("0::/system.slice/nginx.service\n", Some("nginx.service")),
            ("0::/system.slice/foo.service/payload\n", Some("foo.service")),
            ("0::/init.scope\n", Some("init.scope")),
            ("0::/user.slice/user-1000.slice/session-3.scope\n", Some("session-3.scope")),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope\n",
                Some("app-foo.scope"),
            ),
            (&format!("0::/system.slice/docker-{ID}.scope\n"), Some(&format!("docker-{ID}.scope"))),
            (
                &format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope\n"),
                Some(&format!("cri-containerd-{ID}.scope")),
            ),
            ("0::/system.slice/system-getty.slice/getty@tty1.service\n", Some("getty@tty1.service")),
            ("0::/system.slice/foo\\x2dbar.service\n", Some("foo\\x2dbar.service")),
            // Hybrid host, unit in a container systemd's unified tree: the named line is "/".
            ("9:name=systemd:/\n0::/sockwarden-it-1/system.slice/sw-leaky.service\n", Some("sw-leaky.service")),
            // Hybrid: the name=systemd line wins over the unified one.
            (
                "12:cpu,cpuacct:/system.slice/x.service\n1:name=systemd:/system.slice/sshd.service\n0::/system.slice/other.service\n",
                Some("sshd.service"),
            ),
            ("0::/\n", None),
            ("0::/system.slice\n", None),
            ("0::/.service\n", None),
            (&format!("12:memory:/docker/{ID}\n0::/docker/{ID}\n"), None),
            ("", None),
            ("garbage without colons", None),
        ];
        for (text, want) in cases {
            assert_eq!(unit_from_cgroup(text).as_deref(), *want, "cgroup {text:?}");
        }
    }

    #[test]
    fn container_from_cgroup_table() {
        let short = &ID[..12];
        let cases: Vec<(String, Option<&str>)> = vec![
            (format!("0::/system.slice/docker-{ID}.scope\n"), Some(short)),
            (
                format!("12:memory:/docker/{ID}\n0::/docker/{ID}\n"),
                Some(short),
            ),
            (
                format!("0::/kubepods.slice/x.slice/cri-containerd-{ID}.scope\n"),
                Some(short),
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                Some(short),
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
                Some(short),
            ),
            (
                format!("11:pids:/kubepods/burstable/pod12-34/{ID}\n"),
                Some(short),
            ),
            ("0::/system.slice/nginx.service\n".to_string(), None),
            (
                format!("0::/system.slice/docker-{}.scope\n", &ID[..63]),
                None,
            ),
            ("0::/system.slice/docker.service\n".to_string(), None),
        ];
        for (text, want) in &cases {
            assert_eq!(
                container_from_cgroup(text).as_deref(),
                *want,
                "cgroup {text:?}"
            );
        }
    }

    #[test]
    fn pod_uid_from_cgroup_table() {
        const UID: &str = "0f4c1a2b-3d4e-4f50-8a6b-7c8d9e0f1a2b";
        let under = UID.replace('-', "_");
        let cases: Vec<(String, Option<&str>)> = vec![
            // systemd driver, each QoS class.
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{ID}.scope\n"),
                Some(UID),
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod{under}.slice/crio-{ID}.scope\n"),
                Some(UID),
            ),
            // cgroupfs driver (v1 line), upper-case hex is folded.
            (
                format!("11:pids:/kubepods/besteffort/pod{}/{ID}\n", UID.to_uppercase()),
                Some(UID),
            ),
            // Not a pod: a service, a truncated uid, a `pod` that is not one.
            ("0::/system.slice/podman.service\n".to_string(), None),
            (format!("0::/kubepods/besteffort/pod{}/x\n", &UID[..35]), None),
            ("0::/user.slice/user-0.slice/session-1.scope\n".to_string(), None),
        ];
        for (text, want) in &cases {
            assert_eq!(
                pod_uid_from_cgroup(text).as_deref(),
                *want,
                "cgroup {text:?}"
            );
        }
    }

    #[test]
    fn parse_stat_table() {
        let tail = "S 1 1 1 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 987654 1000 100";
        type Want = Option<(&'static str, char, u64)>;
        let cases: Vec<(String, Want)> = vec![
            (format!("42 (nginx) {tail}"), Some(("nginx", 'S', 987654))),
            (
                format!("42 (a) (b) c) {tail}"),
                Some(("a) (b) c", 'S', 987654)),
            ),
            (
                format!("42 (with space) {tail}"),
                Some(("with space", 'S', 987654)),
            ),
            (format!("42 () {tail}"), Some(("", 'S', 987654))),
            ("42 (short) S 1 2 3".to_string(), None),
            ("no parens".to_string(), None),
            (format!("42 (x) {}", tail.replace("987654", "-5")), None),
            (String::new(), None),
        ];
        for (text, want) in &cases {
            let got = parse_stat(text);
            let got = got
                .as_ref()
                .map(|s| (s.comm.as_str(), s.state, s.start_time));
            assert_eq!(got, *want, "stat {text:?}");
        }
    }

    #[test]
    fn small_parsers() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"/tmp/socket:[1]"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999]"), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(
            cmdline_from_raw(b"nginx: worker\0-g\0daemon off;\0\0"),
            "nginx: worker -g daemon off;"
        );
        assert_eq!(cmdline_from_raw(b""), "");
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        let mut buf = [0u8; 16];
        assert_eq!(format_pid(i32::MAX, &mut buf).ok(), Some("2147483647"));
    }

    /// Builds a fake `/proc` in a temp dir.
    struct FakeProc {
        dir: tempfile::TempDir,
    }

    impl FakeProc {
        fn new() -> FakeProc {
            FakeProc {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn root(&self) -> PathBuf {
            self.dir.path().to_path_buf()
        }
        fn process(&self, pid: i32, comm: &str, start: u64, uid: u32, cgroup: &str) -> PathBuf {
            let p = self.root().join(pid.to_string());
            std::fs::create_dir_all(p.join("fd")).expect("mkdir");
            let stat =
                format!("{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n");
            std::fs::write(p.join("stat"), stat).expect("stat");
            std::fs::write(
                p.join("status"),
                format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
            )
            .expect("status");
            std::fs::write(p.join("cmdline"), format!("/usr/bin/{comm}\0--flag\0"))
                .expect("cmdline");
            std::fs::write(p.join("cgroup"), cgroup).expect("cgroup");
            symlink(format!("/usr/bin/{comm}"), p.join("exe")).expect("exe");
            p
        }
        fn fd(&self, pid: i32, fd: i32, target: &str) {
            symlink(
                target,
                self.root()
                    .join(pid.to_string())
                    .join("fd")
                    .join(fd.to_string()),
            )
            .expect("fd");
        }
    }

    fn owners_of(scan: &OwnerScan, inode: u64) -> Vec<(i32, i32)> {
        scan.owners
            .get(&Inode(inode))
            .map(|v| v.iter().map(|o| (o.process.id.pid.0, o.fd)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn fake_tree_shared_socket_vanished_pid_and_non_sockets() {
        let fake = FakeProc::new();
        fake.process(300, "worker", 5000, 33, "0::/system.slice/web.service\n");
        fake.process(200, "master (x)", 4000, 0, "0::/system.slice/web.service\n");
        fake.process(
            400,
            "other",
            6000,
            1000,
            "0::/user.slice/user-1000.slice/session-1.scope\n",
        );
        // Both processes hold socket 111 (after fork); 300 also holds 222 twice (dup).
        fake.fd(200, 3, "socket:[111]");
        fake.fd(300, 3, "socket:[111]");
        fake.fd(300, 7, "socket:[222]");
        fake.fd(300, 8, "socket:[222]");
        fake.fd(300, 0, "/dev/null");
        fake.fd(300, 1, "pipe:[111]");
        fake.fd(400, 4, "socket:[999]"); // not wanted
                                         // A pid whose directory emptied out (exited between readdir and open).
        std::fs::create_dir(fake.root().join("500")).expect("mkdir");
        // Not pids.
        std::fs::create_dir(fake.root().join("self-ish")).expect("mkdir");
        std::fs::write(fake.root().join("uptime"), "1 1").expect("uptime");

        let wanted = InodeSet::from_iter([Inode(111), Inode(222), Inode(333)]);
        let scan = scan_owners_at(&fake.root(), &wanted);
        assert_eq!(scan.processes_scanned, 4);
        assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
        assert_eq!(owners_of(&scan, 111), vec![(200, 3), (300, 3)]);
        let mut dup = owners_of(&scan, 222);
        dup.sort();
        assert_eq!(dup, vec![(300, 7), (300, 8)]);
        assert!(!scan.owners.contains_key(&Inode(333)));
        assert!(!scan.owners.contains_key(&Inode(999)));

        let shared = &scan.owners[&Inode(222)];
        assert!(
            Arc::ptr_eq(&shared[0].process, &shared[1].process),
            "one Arc per process"
        );
        let master = &scan.owners[&Inode(111)][0].process;
        assert_eq!(
            master.id,
            ProcessId {
                pid: Pid(200),
                start_time: 4000
            }
        );
        assert_eq!(master.comm, "master (x)");
        assert_eq!(master.cmdline, "/usr/bin/master (x) --flag");
        assert_eq!(master.exe.as_deref(), Some("/usr/bin/master (x)"));
        assert_eq!(master.uid, 0);
        assert_eq!(master.unit.as_deref(), Some("web.service"));
        assert_eq!(master.container, None);
        assert_eq!(scan.owners[&Inode(111)][1].process.uid, 33);
    }

    #[test]
    fn fake_tree_process_gone_before_details_is_skipped() {
        let fake = FakeProc::new();
        let p = fake.process(10, "x", 1, 0, "0::/\n");
        fake.fd(10, 3, "socket:[5]");
        std::fs::remove_file(p.join("stat")).expect("rm");
        let scan = scan_owners_at(&fake.root(), &InodeSet::from_iter([Inode(5)]));
        assert!(scan.owners.is_empty());
        assert!(scan.unreadable.is_empty());
        assert_eq!(scan.processes_scanned, 1);
    }

    #[test]
    fn fake_tree_unexpected_errors_are_reported_not_fatal() {
        let fake = FakeProc::new();
        fake.process(10, "x", 1, 0, "0::/\n");
        fake.fd(10, 3, "socket:[5]");
        // `fd` is a file, not a directory: ENOTDIR, reported for pid 11 only.
        std::fs::create_dir(fake.root().join("11")).expect("mkdir");
        std::fs::write(fake.root().join("11/fd"), "").expect("fd file");
        let scan = scan_owners_at(&fake.root(), &InodeSet::from_iter([Inode(5)]));
        assert_eq!(owners_of(&scan, 5), vec![(10, 3)]);
        assert_eq!(scan.unreadable.len(), 1);
        assert_eq!(scan.unreadable[0].0, Pid(11));
    }

    #[test]
    fn empty_wanted_touches_nothing() {
        let scan = scan_owners_at(Path::new("/nonexistent/proc"), &InodeSet::default());
        assert_eq!(scan.processes_scanned, 0);
        assert!(scan.owners.is_empty());
        let scan = scan_owners_at(
            Path::new("/nonexistent/proc"),
            &InodeSet::from_iter([Inode(1)]),
        );
        assert_eq!(scan.processes_scanned, 0);
    }

    fn inode_of(fd: &impl AsFd) -> Inode {
        Inode(nix::sys::stat::fstat(fd).expect("fstat").st_ino)
    }

    #[test]
    fn real_proc_finds_own_listener_and_forked_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fd = listener.as_raw_fd();
        let inode = inode_of(&listener);
        let wanted = InodeSet::from_iter([inode]);
        let me = std::process::id() as i32;

        let scan = scan_owners(&wanted);
        assert!(scan.processes_scanned > 1);
        assert_eq!(owners_of(&scan, inode.0), vec![(me, fd)]);
        let process = &scan.owners[&inode][0].process;
        assert_eq!(
            process.id.start_time,
            start_time(Pid(me)).expect("start time")
        );
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        assert_eq!(process.comm, comm.trim_end());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(process.uid, unsafe { libc::geteuid() });
        assert!(process.exe.is_some());
        assert_eq!(read_process(Pid(me)).expect("read_process"), **process);

        // Only this child inherits the socket: clearing FD_CLOEXEC in the parent would leak it
        // into children other tests spawn meanwhile.
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn sleep");
        let child_pid = child.id() as i32;
        // Wait for the exec so that the child's comm is `sleep`.
        let mut owners = Vec::new();
        for _ in 0..200 {
            let scan = scan_owners(&wanted);
            owners = scan.owners.get(&inode).cloned().unwrap_or_default();
            if owners.len() == 2 && owners.iter().any(|o| o.process.comm == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut got: Vec<(i32, i32)> = owners.iter().map(|o| (o.process.id.pid.0, o.fd)).collect();
        assert!(
            got.windows(2).all(|w| w[0] <= w[1]),
            "sorted by pid: {got:?}"
        );
        got.sort();
        let mut want = vec![(me, fd), (child_pid, fd)];
        want.sort();
        assert_eq!(got, want);
        let sleeper = owners
            .iter()
            .find(|o| o.process.id.pid.0 == child_pid)
            .expect("child");
        assert_eq!(sleeper.process.comm, "sleep");
        assert_eq!(sleeper.process.cmdline, "sleep 30");
    }

    /// Benchmark by hand (as root, alone):
    /// `cargo test --lib sys::procfs::tests::bench_100k -- --ignored --nocapture`
    /// 100 `sleep` processes holding 1000 LISTEN sockets each, in a private network
    /// namespace (SO_REUSEPORT, one port per process: reuseport groups are bounded), and
    /// `ss -tan` timed on the same sockets for comparison.
    #[test]
    #[ignore]
    fn bench_100k_sockets_100_processes() {
        use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType};
        let fixture = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            let mut wanted = InodeSet::default();
            let mut children = Vec::new();
            for i in 0..100u16 {
                let mut batch = Vec::new();
                let addr = sock::SockaddrIn::new(0, 0, 0, 0, 5000 + i);
                for _ in 0..1000 {
                    // Not CLOEXEC: the sleep spawned below inherits the batch.
                    let s = sock::socket(
                        AddressFamily::Inet,
                        SockType::Stream,
                        SockFlag::empty(),
                        None,
                    )
                    .expect("socket");
                    sock::setsockopt(&s, sockopt::ReusePort, &true).expect("SO_REUSEPORT");
                    sock::bind(s.as_raw_fd(), &addr).expect("bind");
                    sock::listen(&s, sock::Backlog::new(1).expect("backlog")).expect("listen");
                    wanted.insert(inode_of(&s));
                    batch.push(s);
                }
                children.push(
                    std::process::Command::new("sleep")
                        .arg("120")
                        .spawn()
                        .expect("spawn"),
                );
                drop(batch); // the parent's copies
            }
            (wanted, children)
        });
        let (wanted, mut children) = fixture.join().expect("fixture");
        let netns = format!("/proc/{}/ns/net", children[0].id());

        let mut best = std::time::Duration::MAX;
        for _ in 0..3 {
            let before = cpu_times();
            let t = std::time::Instant::now();
            let scan = scan_owners(&wanted);
            let elapsed = t.elapsed();
            let after = cpu_times();
            best = best.min(elapsed);
            let found: usize = scan.owners.values().map(Vec::len).sum();
            println!(
                "scan_owners: {} wanted, {found} owners, {} processes, {elapsed:?} \
                 (cpu, all threads: user {:?} sys {:?})",
                wanted.len(),
                scan.processes_scanned,
                after.0 - before.0,
                after.1 - before.1,
            );
            assert_eq!(found, 100_000);

            let before = rusage(libc::RUSAGE_CHILDREN);
            let t = std::time::Instant::now();
            let ss = std::process::Command::new("nsenter")
                .args([format!("--net={netns}").as_str(), "ss", "-tan"])
                .output()
                .expect("ss");
            let elapsed = t.elapsed();
            let after = rusage(libc::RUSAGE_CHILDREN);
            println!(
                "ss -tan: {} lines, {elapsed:?} (cpu: user {:?} sys {:?})",
                ss.stdout.iter().filter(|&&b| b == b'\n').count(),
                after.0 - before.0,
                after.1 - before.1,
            );
        }
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let peak = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("VmHWM: ?");
        println!("best scan: {best:?}; test process peak RSS {peak}");
    }

    fn cpu_times() -> (std::time::Duration, std::time::Duration) {
        rusage(libc::RUSAGE_SELF)
    }

    fn rusage(who: libc::c_int) -> (std::time::Duration, std::time::Duration) {
        // SAFETY: getrusage only writes into the zeroed struct we own.
        let usage = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut u);
            u
        };
        let tv = |t: libc::timeval| {
            std::time::Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64)
        };
        (tv(usage.ru_utime), tv(usage.ru_stime))
    }
}
