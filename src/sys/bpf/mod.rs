//! The eBPF side of the kernel boundary: loads `sockwarden.bpf.o` (built from
//! `sockwarden.bpf.c` by `build.sh`, committed so that a build needs only Rust) and reads
//! what its programs know.
//!
//! - An index of every full TCP socket in a watched state, in every namespace, with the
//!   exact time it entered that state (`on_state` stamps sockets by cookie in `entered`),
//!   and of the namespaces it holds completely (`complete`: swept once by the agent, their
//!   older sockets stamped), so that a pass looks up only the sockets the index names there
//!   instead of dumping (see [`watch`]).
//! - The holders of given socket inodes in one kernel pass (the `socket_files` iterator over
//!   every task's files), instead of a readlink of every fd under `/proc`.
//!
//! The index and its tracepoint link are pinned under [`PIN_DIR`] when that is a bpf
//! filesystem, so the stamps (and the ages they give) outlive the agent: a restart or an
//! upgrade finds them there. Without bpffs the index lives as long as the agent.
//!
//! ELF parsing and CO-RE relocation (matching the object's field accesses to this kernel's
//! BTF) are aya-obj's; loading, attaching and reading are the few bpf(2) commands in
//! [`syscall`]. Any failure is an [`Unavailable`] that names the cause: the caller keeps
//! to sock_diag and `/proc`.

pub mod syscall;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya_obj::btf::{Btf, BtfKind};
use aya_obj::{Map, Object};

use crate::model::{Cookie, Family, Inode, InodeSet, KernelSocket, NetnsId, Pid, TcpState};

/// The compiled programs (`build.sh` rebuilds it; CI checks it matches the source).
const OBJECT: &[u8] = include_bytes!("sockwarden.bpf.o");

/// Where the index is pinned. The `v1` is the layout of a stamp and of the records: a
/// release that changes them pins elsewhere instead of misreading an older index.
pub const PIN_DIR: &str = "/sys/fs/bpf/sockwarden/v2";

/// Overrides [`PIN_DIR`]; empty: never pin (the tests' daemons, so that no index outlives
/// them on a host whose bpffs is mounted).
pub const PIN_DIR_ENV: &str = "SOCKWARDEN_BPF_PIN_DIR";

/// `BPF_FS_MAGIC`: what statfs says of a bpf filesystem.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

/// Why the eBPF programs are not in use, and what would make them so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    pub hint: &'static str,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.hint)
    }
}

fn unavailable(reason: impl Into<String>, hint: &'static str) -> Unavailable {
    Unavailable {
        reason: reason.into(),
        hint,
    }
}

/// A fault in the committed object rather than in this machine.
const REBUILD: &str = "rebuild the object with src/sys/bpf/build.sh";

/// What a permission error from bpf(2) means for an operator.
const CAP_HINT: &str = "loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)";

/// The loaded programs and their maps.
pub struct Kernel {
    /// The index's maps (never filled when no index is kept).
    index_maps: IndexMaps,
    files_link: OwnedFd,
    wanted: OwnedFd,
    only_wanted: OwnedFd,
    /// The inodes now in `wanted`, to take out before the next owner pass.
    wanted_now: std::cell::RefCell<Vec<u64>>,
    /// The programs' links when they are not pinned: attached while this lives.
    _links: Vec<OwnedFd>,
    /// Whether `on_synack` runs: else every namespace may hold SYN_RECV requests.
    pub requests_tracked: bool,
    /// Where the index of state transitions is kept, or why there is none.
    pub index: Result<String, String>,
}

/// The maps of the index, pinned together.
struct IndexMaps {
    /// cookie -> [`Stamp`].
    entered: OwnedFd,
    /// [0]: sockets not stamped because `entered` was full.
    unstamped: OwnedFd,
    /// namespace inode -> when it last retransmitted a SYN-ACK.
    requested: OwnedFd,
    /// namespace inode -> since when the index holds all of it.
    complete: OwnedFd,
}

/// The index's maps and programs as they are pinned, by name.
const INDEX_MAPS: [&str; 4] = ["entered", "unstamped", "requested", "complete"];

/// What the index knows of one socket, as it was when it entered its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The watched state it entered.
    pub state: TcpState,
    /// When it entered it, on CLOCK_BOOTTIME.
    pub entered_boot_ns: u64,
    /// The inode number of its network namespace.
    pub netns_inode: u64,
    pub family: Family,
    /// The tuple then: a SYN_SENT socket is stamped before its local port is chosen.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub interface: u32,
    /// Its inode then (0 while it waited in an accept queue, or once orphaned).
    pub inode: Inode,
    pub uid: u32,
    /// Put by the agent for a socket older than the index: `entered_boot_ns` is a lower
    /// bound from `tcp_info`, not the moment of the change.
    pub swept: bool,
}

impl Stamp {
    /// The stamp a sweep puts for `socket`, found in its state at `now` (boot clock).
    pub fn swept(socket: &KernelSocket, now: Duration) -> Stamp {
        Stamp {
            state: socket.state,
            entered_boot_ns: now.as_nanos() as u64,
            netns_inode: socket.netns.inode,
            family: socket.family,
            local: socket.local,
            remote: socket.remote,
            interface: socket.interface,
            inode: socket.inode,
            uid: socket.uid,
            swept: true,
        }
    }

    /// The socket as stamped, enough to look it up by id in namespace `netns`; its queues
    /// and `tcp_info` are the lookup's.
    pub fn socket(&self, netns: NetnsId, cookie: Cookie) -> KernelSocket {
        KernelSocket {
            netns,
            family: self.family,
            state: self.state,
            local: self.local,
            remote: self.remote,
            interface: self.interface,
            cookie,
            inode: self.inode,
            uid: self.uid,
            recv_q: 0,
            send_q: 0,
            timer: None,
            tcp: None,
        }
    }
}

/// A process holding a wanted socket, as the kernel saw it in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: Pid,
    /// Clock ticks since boot, as `/proc/<pid>/stat` field 22 gives it.
    pub start_time: u64,
    pub fd: i32,
    pub inode: Inode,
}

const STAMP_LEN: usize = 72;

/// How many sockets the index holds at most (`max_entries` of `entered`): beyond, passes
/// dump every namespace.
pub const INDEX_CAPACITY: u32 = 1 << 20;

/// Up to this many wanted inodes go into the kernel's map (its `max_entries`, 2^14); more
/// are filtered here. Measured on 100,000: filling the map took 74-94 ms, more than
/// reading every socket file.
const WANTED_IN_KERNEL: usize = 1 << 14;
const HOLDER_RECORD_LEN: usize = 24;

impl Kernel {
    /// Load the programs, reusing the index pinned at [`PIN_DIR`] when there is one; when
    /// there is none and `create_index`, attach the tracepoint and pin a new index.
    pub fn load(create_index: bool) -> Result<Kernel, Unavailable> {
        let vmlinux = Btf::from_sys_fs().map_err(|e| {
            unavailable(
                format!("cannot read the kernel's BTF at /sys/kernel/btf/vmlinux: {e}"),
                "needs a kernel built with CONFIG_DEBUG_INFO_BTF (Linux 5.8 or later)",
            )
        })?;
        let object = object_relocated(&vmlinux)?;
        let pin = pin_dir_usable(create_index);
        Kernel::load_object(object, &vmlinux, pin, create_index)
    }

    fn load_object(
        mut obj: Object,
        vmlinux: &Btf,
        pin: Result<PathBuf, String>,
        create_index: bool,
    ) -> Result<Kernel, Unavailable> {
        let maps: Vec<(String, Map)> = obj.maps.drain().collect();
        let create_sized = |name: &str, max_entries: Option<u32>| -> Result<OwnedFd, Unavailable> {
            let def = maps
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, m)| m)
                .ok_or_else(|| unavailable(format!("the BPF object has no map {name}"), REBUILD))?;
            syscall::map_create(&syscall::MapSpec {
                name,
                map_type: def.map_type(),
                key_size: def.key_size(),
                value_size: def.value_size(),
                max_entries: max_entries.unwrap_or(def.max_entries()),
                flags: def.map_flags(),
            })
            .map_err(|e| bpf_error(&format!("create the {name} map"), e))
        };

        let create = |name: &str| create_sized(name, None);

        // An index pinned by an earlier run is reused, stamps and tracepoint and all.
        let reused = pin.as_ref().ok().and_then(|dir| open_pinned(dir));
        let index_maps = match &reused {
            Some(p) => IndexMaps {
                entered: dup(&p.maps.entered)?,
                unstamped: dup(&p.maps.unstamped)?,
                requested: dup(&p.maps.requested)?,
                complete: dup(&p.maps.complete)?,
            },
            None if create_index => IndexMaps {
                entered: create("entered")?,
                unstamped: create("unstamped")?,
                requested: create("requested")?,
                complete: create("complete")?,
            },
            // Never filled (no programs attached): the smallest maps the programs can
            // refer to, not 2^20 buckets to zero.
            None => IndexMaps {
                entered: create_sized("entered", Some(1))?,
                unstamped: create("unstamped")?,
                requested: create_sized("requested", Some(1))?,
                complete: create_sized("complete", Some(1))?,
            },
        };
        let wanted = create("wanted")?;
        let only_wanted = create("only_wanted")?;

        let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
        let fds = [
            ("entered", index_maps.entered.as_raw_fd()),
            ("unstamped", index_maps.unstamped.as_raw_fd()),
            ("requested", index_maps.requested.as_raw_fd()),
            ("complete", index_maps.complete.as_raw_fd()),
            ("wanted", wanted.as_raw_fd()),
            ("only_wanted", only_wanted.as_raw_fd()),
        ];
        obj.relocate_maps(
            maps.iter().filter_map(|(name, map)| {
                let fd = fds.iter().find(|(n, _)| n == name)?.1;
                Some((name.as_str(), fd, map))
            }),
            &text_sections,
        )
        .map_err(|e| unavailable(format!("relocate the BPF maps: {e}"), REBUILD))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| unavailable(format!("link the BPF programs: {e}"), REBUILD))?;

        let load = |name: &str, attach_type: u32, target: &str, kind: BtfKind| {
            let id = vmlinux.id_by_type_name_kind(target, kind).map_err(|_| {
                unavailable(
                    format!("this kernel has no {target} to attach {name} to"),
                    "needs Linux 5.11 or later with BPF iterators and tp_btf",
                )
            })?;
            load_program(&obj, name, attach_type, id)
        };
        let files_prog = load(
            "socket_files",
            syscall::TRACE_ITER,
            "bpf_iter_task_file",
            BtfKind::Func,
        )?;
        let files_link = syscall::iter_link(files_prog.as_fd())
            .map_err(|e| bpf_error("link the task_file iterator", e))?;

        let mut requests_tracked = reused.as_ref().is_some_and(|p| p.requests_tracked);
        let (links, index) = match (reused, pin) {
            (Some(_), Ok(dir)) => (
                Vec::new(),
                Ok(format!("{} (pinned by an earlier run)", dir.display())),
            ),
            (None, Ok(_)) if !create_index => (
                Vec::new(),
                Err("none pinned yet (only the daemon creates the index)".to_string()),
            ),
            (None, Err(why)) if !create_index => (Vec::new(), Err(format!("none pinned: {why}"))),
            (_, pin) => {
                let prog = load(
                    "on_state",
                    syscall::TRACE_RAW_TP,
                    "btf_trace_inet_sock_set_state",
                    BtfKind::Typedef,
                )?;
                let link = syscall::raw_tracepoint_open(prog.as_fd())
                    .map_err(|e| bpf_error("attach to the inet_sock_set_state tracepoint", e))?;
                // Without it (no such tracepoint on this kernel) passes dump for SYN_RECV
                // everywhere: slower, never blind.
                let synack_link = load(
                    "on_synack",
                    syscall::TRACE_RAW_TP,
                    "btf_trace_tcp_retransmit_synack",
                    BtfKind::Typedef,
                )
                .and_then(|prog| {
                    syscall::raw_tracepoint_open(prog.as_fd())
                        .map_err(|e| bpf_error("attach to the tcp_retransmit_synack tracepoint", e))
                });
                if let Err(e) = &synack_link {
                    tracing::info!("SYN_RECV request sockets are dumped every pass: {e}");
                }
                let synack_link = synack_link.ok();
                requests_tracked = synack_link.is_some();
                let mut objects: Vec<(&OwnedFd, &str)> = vec![
                    (&index_maps.entered, "entered"),
                    (&index_maps.unstamped, "unstamped"),
                    (&index_maps.requested, "requested"),
                    (&index_maps.complete, "complete"),
                    (&link, "on_state"),
                ];
                if let Some(l) = &synack_link {
                    objects.push((l, "on_synack"));
                }
                let pinned = pin.and_then(|dir| pin_index(&dir, &objects).map(|()| dir));
                if pinned.as_deref().is_ok_and(|dir| dir == Path::new(PIN_DIR)) {
                    remove_older_layouts();
                }
                match pinned {
                    // Pinned: the pins keep the programs attached, these fds need not.
                    Ok(dir) => (Vec::new(), Ok(format!("{} (pinned now)", dir.display()))),
                    Err(why) => (
                        std::iter::once(link).chain(synack_link).collect(),
                        Ok(format!("kept while sockwarden runs, not pinned ({why}): ages restart at each start")),
                    ),
                }
            }
        };
        Ok(Kernel {
            index_maps,
            files_link,
            wanted,
            only_wanted,
            wanted_now: std::cell::RefCell::new(Vec::new()),
            _links: links,
            index,
            requests_tracked,
        })
    }

    /// Every socket the index holds now, with its cookie (none when no index is kept).
    pub fn stamps(&self) -> io::Result<Vec<(Cookie, Stamp)>> {
        if self.index.is_err() {
            return Ok(Vec::new());
        }
        let entered = self.index_maps.entered.as_fd();
        let (keys, values) = syscall::map_lookup_all(entered, 8, STAMP_LEN, 4096)?;
        Ok(keys
            .chunks_exact(8)
            .zip(values.chunks_exact(STAMP_LEN))
            .filter_map(|(k, v)| Some((Cookie(u64_at(k, 0)), parse_stamp(v)?)))
            .collect())
    }

    /// Stamp sockets a sweep found (`swept` stamps), where the program has not stamped them
    /// meanwhile: its stamp is newer, and exact.
    pub fn stamp_swept(&self, found: impl IntoIterator<Item = (Cookie, Stamp)>) {
        let entered = self.index_maps.entered.as_fd();
        for (cookie, stamp) in found {
            let value = encode_stamp(&Stamp {
                swept: true,
                ..stamp
            });
            let _ = syscall::map_update(entered, &cookie.0.to_ne_bytes(), &value, syscall::NOEXIST);
        }
    }

    /// Remove a stamp the agent put, if it is still the agent's (the program may have
    /// replaced it since, for a newer state): a sweep can stamp a socket that left its
    /// state between the dump and the stamp, and a lookup then finds it gone.
    pub fn unstamp_swept(&self, cookie: Cookie) {
        let entered = self.index_maps.entered.as_fd();
        let key = cookie.0.to_ne_bytes();
        let mut value = [0u8; STAMP_LEN];
        if syscall::map_lookup(entered, &key, &mut value).is_ok()
            && parse_stamp(&value).is_some_and(|s| s.swept)
        {
            let _ = syscall::map_delete(entered, &key);
        }
    }

    /// The namespaces (by inode) the index holds completely.
    pub fn complete_namespaces(&self) -> io::Result<HashSet<u64>> {
        let (keys, _) = syscall::map_lookup_all(self.index_maps.complete.as_fd(), 4, 8, 1024)?;
        Ok(keys
            .chunks_exact(4)
            .map(|k| u64::from(u32_at(k, 0)))
            .collect())
    }

    /// Say that the index now holds every socket of namespace `inode` (after a sweep).
    pub fn mark_complete(&self, inode: u64) -> io::Result<()> {
        let key = (inode as u32).to_ne_bytes();
        let now = boot_clock_now().as_nanos() as u64;
        syscall::map_update(
            self.index_maps.complete.as_fd(),
            &key,
            &now.to_ne_bytes(),
            0,
        )
    }

    /// When each namespace (by inode) last retransmitted a SYN-ACK (a request socket older
    /// than its first timeout), on CLOCK_BOOTTIME; `None` when that is not tracked.
    pub fn requests(&self) -> Option<HashMap<u64, u64>> {
        if !self.requests_tracked {
            return None;
        }
        let requested = self.index_maps.requested.as_fd();
        let (keys, values) = syscall::map_lookup_all(requested, 4, 8, 1024).ok()?;
        Some(
            keys.chunks_exact(4)
                .zip(values.chunks_exact(8))
                .map(|(k, v)| (u64::from(u32_at(k, 0)), u64_at(v, 0)))
                .collect(),
        )
    }

    /// How many sockets entered a watched state while the index was full (never stamped).
    pub fn unstamped(&self) -> u64 {
        let mut value = [0u8; 8];
        let unstamped = self.index_maps.unstamped.as_fd();
        match syscall::map_lookup(unstamped, &0u32.to_ne_bytes(), &mut value) {
            Ok(()) => u64::from_ne_bytes(value),
            Err(_) => 0,
        }
    }

    /// The processes holding each of `wanted`, from one pass over every task's files.
    pub fn holders(&self, wanted: &InodeSet) -> io::Result<Vec<Holder>> {
        self.prepare_holders(wanted)?.run()
    }

    /// Set the iterator up for `wanted`: the pass itself ([`HoldersJob::run`]) may then run
    /// on another thread. Few: the kernel filters through the map. Many: filling the map
    /// costs more than reading every socket file and filtering here.
    pub fn prepare_holders<'w>(&self, wanted: &'w InodeSet) -> io::Result<HoldersJob<'w>> {
        self.prepare_holders_filtered(wanted, wanted.len() <= WANTED_IN_KERNEL)
    }

    /// Set the iterator up for every file of a TCP socket in one of `states` (the caller
    /// filters later, by inode).
    pub fn prepare_all_holders(
        &self,
        states: crate::model::StateSet,
    ) -> io::Result<HoldersJob<'static>> {
        self.set_wanted(&InodeSet::default())?;
        self.set_only_wanted(false)?;
        self.set_holder_states(states.kernel_mask())?;
        Ok(HoldersJob {
            link: self.files_link.try_clone()?,
            wanted: None,
        })
    }

    fn prepare_holders_filtered<'w>(
        &self,
        wanted: &'w InodeSet,
        in_kernel: bool,
    ) -> io::Result<HoldersJob<'w>> {
        let none = InodeSet::default();
        self.set_wanted(if in_kernel { wanted } else { &none })?;
        self.set_only_wanted(in_kernel)?;
        self.set_holder_states(0)?;
        Ok(HoldersJob {
            link: self.files_link.try_clone()?,
            wanted: Some(wanted),
        })
    }

    /// Whether the iterator reports only the inodes in `wanted`.
    fn set_only_wanted(&self, only: bool) -> io::Result<()> {
        let flag = u32::from(only).to_ne_bytes();
        syscall::map_update(self.only_wanted.as_fd(), &0u32.to_ne_bytes(), &flag, 0)
    }

    /// Which TCP states' sockets the iterator reports (a `1 << state` mask; 0: every
    /// socket file).
    fn set_holder_states(&self, mask: u32) -> io::Result<()> {
        syscall::map_update(
            self.only_wanted.as_fd(),
            &1u32.to_ne_bytes(),
            &mask.to_ne_bytes(),
            0,
        )
    }

    /// Replace the contents of `wanted` with `inodes`.
    fn set_wanted(&self, inodes: &InodeSet) -> io::Result<()> {
        let mut now = self.wanted_now.borrow_mut();
        if !now.is_empty() {
            let keys: Vec<u8> = now.iter().flat_map(|k| k.to_ne_bytes()).collect();
            syscall::map_delete_batch(self.wanted.as_fd(), &keys, now.len())?;
            now.clear();
        }
        now.extend(inodes.iter().map(|i| i.0));
        if now.is_empty() {
            return Ok(());
        }
        let keys: Vec<u8> = now.iter().flat_map(|k| k.to_ne_bytes()).collect();
        let values = vec![1u8; now.len()];
        let result = syscall::map_update_batch(self.wanted.as_fd(), &keys, &values, now.len());
        if result.is_err() {
            // Some may be in: take them out one by one (absent ones are no matter).
            for key in now.drain(..) {
                let _ = syscall::map_delete(self.wanted.as_fd(), &key.to_ne_bytes());
            }
        }
        result
    }
}

/// One pass of the task_file iterator, set up by [`Kernel::prepare_holders`]: it owns what
/// it reads through, so it can run on another thread.
pub struct HoldersJob<'w> {
    link: OwnedFd,
    /// The inodes to keep; `None`: every socket file.
    wanted: Option<&'w InodeSet>,
}

impl HoldersJob<'_> {
    /// The holders of the wanted inodes (or of every socket), as the iterator finds them now.
    pub fn run(self) -> io::Result<Vec<Holder>> {
        let started = std::time::Instant::now();
        let bytes = read_iterator(&self.link)?;
        tracing::debug!(
            iterator_ms = started.elapsed().as_millis() as u64,
            "task_file iterator read"
        );
        let ticks = clock_ticks_per_sec();
        Ok(bytes
            .chunks_exact(HOLDER_RECORD_LEN)
            .map(|r| Holder {
                inode: Inode(u64_at(r, 0)),
                // /proc/<pid>/stat's start time is start_boottime in clock ticks.
                start_time: u64_at(r, 8) / (1_000_000_000 / ticks),
                pid: Pid(u32_at(r, 16) as i32),
                fd: u32_at(r, 20) as i32,
            })
            .filter(|h| self.wanted.map_or(true, |w| w.contains(&h.inode)))
            .collect())
    }
}

/// The object, parsed and CO-RE-relocated against `vmlinux`.
fn object_relocated(vmlinux: &Btf) -> Result<Object, Unavailable> {
    // object's ELF reader wants the bytes aligned: a heap copy is.
    let data = OBJECT.to_vec();
    let mut obj = Object::parse(&data)
        .map_err(|e| unavailable(format!("parse the BPF object: {e}"), REBUILD))?;
    obj.relocate_btf(vmlinux).map_err(|e| {
        unavailable(
            format!("this kernel's types do not match what the BPF programs read: {e}"),
            "the programs need struct sock, tcp_sock, file and task_struct fields of Linux 5.11+",
        )
    })?;
    Ok(obj)
}

fn load_program(
    obj: &Object,
    name: &str,
    attach_type: u32,
    attach_btf_id: u32,
) -> Result<OwnedFd, Unavailable> {
    let program = obj
        .programs
        .get(name)
        .ok_or_else(|| unavailable(format!("the BPF object has no program {name}"), REBUILD))?;
    let function = obj
        .functions
        .get(&program.function_key())
        .ok_or_else(|| unavailable(format!("the BPF object has no code for {name}"), REBUILD))?;
    let insns = &function.instructions;
    // SAFETY: bpf_insn is a repr(C) 8-byte plain-data struct; the slice covers exactly the
    // vector's initialised elements and lives as long as `insns`.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            insns.as_ptr() as *const u8,
            std::mem::size_of_val(insns.as_slice()),
        )
    };
    syscall::prog_load(&syscall::ProgSpec {
        name,
        insns: bytes,
        license: &program.license,
        expected_attach_type: attach_type,
        attach_btf_id,
    })
    .map_err(|e| bpf_error(&format!("load the {name} program"), e))
}

fn bpf_error(what: &str, e: io::Error) -> Unavailable {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => CAP_HINT,
        Some(libc::ENOSYS) => "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL)",
        Some(libc::E2BIG) | Some(libc::ENOMEM) => {
            "the kernel refused the memory: raise the memlock limit or the cgroup's"
        }
        _ => "see `sockwarden doctor`",
    };
    unavailable(format!("{what}: {e}"), hint)
}

/// Whether the pin directory can be used: its bpffs mounted, the directory there (made
/// when `create`).
fn pin_dir_usable(create: bool) -> Result<PathBuf, String> {
    let dir = match std::env::var_os(PIN_DIR_ENV) {
        Some(dir) if dir.is_empty() => return Err(format!("{PIN_DIR_ENV} is empty")),
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(PIN_DIR),
    };
    // The bpffs the directory is (or would be) on: its first existing ancestor.
    let root = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    match nix::sys::statfs::statfs(root) {
        Ok(fs) if fs.filesystem_type().0 == BPF_FS_MAGIC => {}
        Ok(_) => {
            return Err(format!(
                "{} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)",
                dir.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", root.display())),
    }
    if create {
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    } else if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    Ok(dir)
}

/// What an earlier run pinned.
struct PinnedIndex {
    maps: IndexMaps,
    /// Whether the SYN-ACK tracepoint program was attached (and pinned) too.
    requests_tracked: bool,
}

/// The index pinned in `dir` by an earlier run, if its maps and its tracepoint link are all
/// there.
fn open_pinned(dir: &Path) -> Option<PinnedIndex> {
    let get = |name: &str| syscall::obj_get(&path_c(&dir.join(name))?).ok();
    let [entered, unstamped, requested, complete] = INDEX_MAPS.map(get);
    let index = PinnedIndex {
        maps: IndexMaps {
            entered: entered?,
            unstamped: unstamped?,
            requested: requested?,
            complete: complete?,
        },
        requests_tracked: get("on_synack").is_some(),
    };
    get("on_state")?;
    let info = syscall::map_info(index.maps.entered.as_fd()).ok()?;
    (info.key_size == 8 && info.value_size == STAMP_LEN as u32).then_some(index)
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, Unavailable> {
    fd.try_clone().map_err(|e| bpf_error("dup a pinned map", e))
}

fn pin_index(dir: &Path, objects: &[(&OwnedFd, &str)]) -> Result<(), String> {
    // Leftovers of a half-made pin (a crash between two pins) would block it.
    for (_, name) in objects {
        let _ = std::fs::remove_file(dir.join(name));
    }
    for (fd, name) in objects {
        let path = dir.join(name);
        let c = path_c(&path).ok_or_else(|| format!("bad path {}", path.display()))?;
        syscall::obj_pin(fd.as_fd(), &c).map_err(|e| format!("pin {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Unpin the index of an earlier layout (`/sys/fs/bpf/sockwarden/v1` after an upgrade):
/// its programs would otherwise stay attached, stamping sockets nobody reads.
fn remove_older_layouts() {
    let ours = Path::new(PIN_DIR);
    let Some(parent) = ours.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir == ours || !dir.is_dir() {
            continue;
        }
        let removed = std::fs::read_dir(&dir)
            .map(|pins| {
                pins.flatten()
                    .all(|pin| std::fs::remove_file(pin.path()).is_ok())
            })
            .unwrap_or(false);
        if removed && std::fs::remove_dir(&dir).is_ok() {
            tracing::info!(
                "removed the eBPF index of an earlier layout at {}",
                dir.display()
            );
        }
    }
}

fn path_c(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).ok()
}

/// One run of an iterator, read to its end.
fn read_iterator(link: &OwnedFd) -> io::Result<Vec<u8>> {
    let fd = syscall::iter_create(link.as_fd())?;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

fn u64_at(r: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&r[at..at + 8]);
    u64::from_ne_bytes(b)
}

fn u32_at(r: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&r[at..at + 4]);
    u32::from_ne_bytes(b)
}

/// A `struct stamp` (sockwarden.bpf.c); `None` for a state or family we do not know.
fn parse_stamp(v: &[u8]) -> Option<Stamp> {
    let family = match u16::from_ne_bytes([v[32], v[33]]) {
        2 => Family::Ipv4,
        10 => Family::Ipv6,
        _ => return None,
    };
    let addr = |at: usize| -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(v[at], v[at + 1], v[at + 2], v[at + 3])),
            Family::Ipv6 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&v[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            }
        }
    };
    Some(Stamp {
        entered_boot_ns: u64_at(v, 0),
        state: TcpState::from_kernel(u8::try_from(u32_at(v, 8)).ok()?)?,
        netns_inode: u64::from(u32_at(v, 12)),
        inode: Inode(u64_at(v, 16)),
        uid: u32_at(v, 24),
        interface: u32_at(v, 28),
        family,
        local: SocketAddr::new(addr(40), u16::from_ne_bytes([v[34], v[35]])),
        remote: SocketAddr::new(addr(56), u16::from_ne_bytes([v[36], v[37]])),
        swept: u16::from_ne_bytes([v[38], v[39]]) & STAMP_SWEPT != 0,
    })
}

/// `STAMP_SWEPT` (sockwarden.bpf.c).
const STAMP_SWEPT: u16 = 1;

/// A stamp as the map holds it: the inverse of [`parse_stamp`].
fn encode_stamp(s: &Stamp) -> [u8; STAMP_LEN] {
    let mut v = [0u8; STAMP_LEN];
    v[0..8].copy_from_slice(&s.entered_boot_ns.to_ne_bytes());
    v[8..12].copy_from_slice(&u32::from(s.state as u8).to_ne_bytes());
    v[12..16].copy_from_slice(&(s.netns_inode as u32).to_ne_bytes());
    v[16..24].copy_from_slice(&s.inode.0.to_ne_bytes());
    v[24..28].copy_from_slice(&s.uid.to_ne_bytes());
    v[28..32].copy_from_slice(&s.interface.to_ne_bytes());
    let family: u16 = match s.family {
        Family::Ipv4 => 2,
        Family::Ipv6 => 10,
    };
    v[32..34].copy_from_slice(&family.to_ne_bytes());
    v[34..36].copy_from_slice(&s.local.port().to_ne_bytes());
    v[36..38].copy_from_slice(&s.remote.port().to_ne_bytes());
    let flags = if s.swept { STAMP_SWEPT } else { 0 };
    v[38..40].copy_from_slice(&flags.to_ne_bytes());
    let mut put = |at: usize, ip: IpAddr| match ip {
        IpAddr::V4(ip) => v[at..at + 4].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => v[at..at + 16].copy_from_slice(&ip.octets()),
    };
    put(40, s.local.ip());
    put(56, s.remote.ip());
    v
}

/// CLOCK_BOOTTIME now, the clock the stamps are in.
pub fn boot_clock_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// The inode number of the initial pid namespace (PROC_PID_INIT_INO): fixed by the kernel.
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// Whether this process is in the host's (the initial) pid namespace: the task_file
/// iterator reports pids as that namespace numbers them, so only there do they name the
/// same processes as our `/proc`. (`NSpid` would not do: a `/proc` mounted for a child
/// pid namespace shows one entry there too.)
pub fn in_initial_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == INITIAL_PID_NAMESPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_as_the_socket_and_time_it_holds() {
        let mut v = vec![0u8; STAMP_LEN];
        v[0..8].copy_from_slice(&5_000_000_000u64.to_ne_bytes());
        v[8..12].copy_from_slice(&8u32.to_ne_bytes()); // CLOSE_WAIT
        v[12..16].copy_from_slice(&4026531840u32.to_ne_bytes());
        v[16..24].copy_from_slice(&4242u64.to_ne_bytes());
        v[24..28].copy_from_slice(&1000u32.to_ne_bytes());
        v[32..34].copy_from_slice(&2u16.to_ne_bytes());
        v[34..36].copy_from_slice(&8080u16.to_ne_bytes());
        v[36..38].copy_from_slice(&40000u16.to_ne_bytes());
        v[40..44].copy_from_slice(&[127, 0, 0, 1]);
        v[56..60].copy_from_slice(&[127, 0, 0, 2]);
        let stamp = parse_stamp(&v).expect("a CLOSE_WAIT stamp");
        assert_eq!(
            stamp,
            Stamp {
                state: TcpState::CloseWait,
                entered_boot_ns: 5_000_000_000,
                netns_inode: 4026531840,
                family: Family::Ipv4,
                local: "127.0.0.1:8080".parse().expect("addr"),
                remote: "127.0.0.2:40000".parse().expect("addr"),
                interface: 0,
                inode: Inode(4242),
                uid: 1000,
                swept: false,
            }
        );
        assert_eq!(
            encode_stamp(&stamp).as_slice(),
            v.as_slice(),
            "encode is parse's inverse"
        );
        let swept = Stamp {
            swept: true,
            ..stamp
        };
        assert_eq!(parse_stamp(&encode_stamp(&swept)), Some(swept));
        v[32..34].copy_from_slice(&10u16.to_ne_bytes());
        v[40..56].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let v6 = parse_stamp(&v).expect("an IPv6 stamp");
        assert_eq!(v6.local, "[::1]:8080".parse().expect("addr"));
        assert_eq!(parse_stamp(&encode_stamp(&v6)), Some(v6));
        v[8..12].copy_from_slice(&300u32.to_ne_bytes());
        assert_eq!(parse_stamp(&v), None, "an unknown state is skipped");
    }

    /// Both ways of filtering give the same holders. Root and a kernel with BPF iterators
    /// are needed: under CI it must run.
    #[test]
    fn holders_are_the_same_whether_the_kernel_or_we_filter() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root"
            );
            eprintln!("skipping: needs root");
            return;
        }
        let kernel = match Kernel::load(false) {
            Ok(kernel) => kernel,
            Err(e) => panic!("the eBPF programs must load here: {e}"),
        };
        let (held, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let fd = held.as_raw_fd();
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("stat the socket")
            .ino();
        let wanted = InodeSet::from_iter([Inode(inode)]);
        let by_kernel = kernel
            .prepare_holders_filtered(&wanted, true)
            .and_then(HoldersJob::run)
            .expect("kernel filter");
        let by_us = kernel
            .prepare_holders_filtered(&wanted, false)
            .and_then(HoldersJob::run)
            .expect("our filter");
        assert_eq!(by_kernel, by_us);
        let ours: Vec<&Holder> = by_kernel
            .iter()
            .filter(|h| h.pid == Pid(std::process::id() as i32))
            .collect();
        assert_eq!(ours.len(), 1, "{by_kernel:?}");
        assert_eq!((ours[0].fd, ours[0].inode), (fd, Inode(inode)));
        let start = crate::sys::procfs::start_time(Pid(std::process::id() as i32)).expect("start");
        assert_eq!(ours[0].start_time, start, "the start time /proc gives");
    }
}
