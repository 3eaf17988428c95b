//! The bpf(2) commands the loader uses, one small function each. Each attribute struct is
//! the prefix of the kernel's `union bpf_attr` for that command (the kernel zero-extends a
//! shorter one), laid out as in `include/uapi/linux/bpf.h`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// Commands (enum bpf_cmd).
const MAP_CREATE: u32 = 0;
const MAP_LOOKUP_ELEM: u32 = 1;
const MAP_UPDATE_ELEM: u32 = 2;
const MAP_DELETE_ELEM: u32 = 3;
const MAP_LOOKUP_BATCH: u32 = 24;
const PROG_LOAD: u32 = 5;
const OBJ_PIN: u32 = 6;
const OBJ_GET: u32 = 7;
const OBJ_GET_INFO_BY_FD: u32 = 15;
const RAW_TRACEPOINT_OPEN: u32 = 17;
const MAP_DELETE_BATCH: u32 = 27;
const MAP_UPDATE_BATCH: u32 = 26;
const LINK_CREATE: u32 = 28;
const ITER_CREATE: u32 = 33;

/// `BPF_PROG_TYPE_TRACING`: tp_btf and iterator programs.
pub const PROG_TYPE_TRACING: u32 = 26;
/// `BPF_TRACE_RAW_TP`: a BTF-typed tracepoint.
pub const TRACE_RAW_TP: u32 = 23;
/// `BPF_TRACE_ITER`: a BPF iterator.
pub const TRACE_ITER: u32 = 28;

/// bpf(2) on `attr`; returns the non-negative result.
fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised repr(C) struct of exactly the size passed, the
    // prefix of `union bpf_attr` for `cmd`; the kernel reads (and for some commands writes)
    // only within that size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// bpf(2) for a command that returns a new file descriptor.
fn bpf_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ptr<T: ?Sized>(p: &T) -> u64 {
    p as *const T as *const u8 as u64
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
}

/// What a map is made of.
pub struct MapSpec<'a> {
    pub name: &'a str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

pub fn map_create(spec: &MapSpec<'_>) -> io::Result<OwnedFd> {
    let attr = MapCreate {
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.flags,
        map_name: object_name(spec.name),
        ..MapCreate::default()
    };
    bpf_fd(MAP_CREATE, &mut { attr })
}

/// The kernel's object names are 15 bytes and NUL, of `[A-Za-z0-9_.]`.
fn object_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = if b.is_ascii_alphanumeric() || b == b'.' {
            b
        } else {
            b'_'
        };
    }
    out
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: ptr(key),
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    bpf(MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

/// `BPF_NOEXIST`: insert only where the key is absent (EEXIST otherwise).
pub const NOEXIST: u64 = 1;

pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: ptr(key),
        value: ptr(value),
        flags,
    };
    bpf(MAP_UPDATE_ELEM, &mut attr).map(drop)
}

pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: ptr(key),
        value: 0,
        flags: 0,
    };
    bpf(MAP_DELETE_ELEM, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct MapBatch {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of a hash map, `chunk` entries per call: keys of `key_size` and
/// values of `value_size` bytes, concatenated.
pub fn map_lookup_all(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    chunk: usize,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut key_buf = vec![0u8; key_size * chunk];
    let mut value_buf = vec![0u8; value_size * chunk];
    // The batch token: for hash maps a bucket index the kernel writes into out_batch.
    let mut token = [0u8; 8];
    let mut first = true;
    loop {
        let mut next = [0u8; 8];
        let mut attr = MapBatch {
            in_batch: if first { 0 } else { ptr(&token) },
            out_batch: next.as_mut_ptr() as u64,
            keys: key_buf.as_mut_ptr() as u64,
            values: value_buf.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..MapBatch::default()
        };
        let result = bpf(MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.count as usize;
        keys.extend_from_slice(&key_buf[..got * key_size]);
        values.extend_from_slice(&value_buf[..got * value_size]);
        match result {
            Ok(_) => {}
            // ENOENT: no more entries (the last batch may still have some).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok((keys, values)),
            // ENOSPC: one bucket holds more than `chunk`: ask again with room for it.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                return map_lookup_all(map, key_size, value_size, chunk * 2);
            }
            Err(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

/// Insert `count` keys of `key_size` bytes (in `keys`) with the values in `values`.
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> io::Result<()> {
    let mut attr = MapBatch {
        keys: ptr(keys),
        values: ptr(values),
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..MapBatch::default()
    };
    bpf(MAP_UPDATE_BATCH, &mut attr).map(drop)
}

/// Delete `count` keys (in `keys`); keys already absent are an error (ENOENT) that stops
/// the batch, so callers delete only what they inserted.
pub fn map_delete_batch(map: BorrowedFd<'_>, keys: &[u8], count: usize) -> io::Result<()> {
    let mut attr = MapBatch {
        keys: ptr(keys),
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..MapBatch::default()
    };
    bpf(MAP_DELETE_BATCH, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
}

/// A program to load: its instructions (8 bytes each) and what it attaches to.
pub struct ProgSpec<'a> {
    pub name: &'a str,
    pub insns: &'a [u8],
    pub license: &'a CStr,
    pub expected_attach_type: u32,
    /// The id in the kernel's BTF of what it attaches to.
    pub attach_btf_id: u32,
}

/// Load a tracing program. When the verifier refuses it, load again with its log and
/// return the log's last lines in the error: they say which instruction and why.
pub fn prog_load(spec: &ProgSpec<'_>) -> io::Result<OwnedFd> {
    let load = |log: Option<&mut [u8]>| {
        let mut attr = ProgLoad {
            prog_type: PROG_TYPE_TRACING,
            insn_cnt: (spec.insns.len() / 8) as u32,
            insns: ptr(spec.insns),
            license: spec.license.as_ptr() as u64,
            prog_name: object_name(spec.name),
            expected_attach_type: spec.expected_attach_type,
            attach_btf_id: spec.attach_btf_id,
            ..ProgLoad::default()
        };
        if let Some(log) = log {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        bpf_fd(PROG_LOAD, &mut attr)
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        // The verifier answers EACCES, EINVAL or EPERM; only its log says why.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EINVAL | libc::EPERM)
            ) =>
        {
            let mut log = vec![0u8; 1 << 20];
            let again = load(Some(&mut log));
            let text =
                String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
                    .into_owned();
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            match again {
                Ok(fd) => Ok(fd),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("{e}; verifier: {}", tail.join(" | ")),
                )),
            }
        }
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
}

/// Attach a tp_btf program: the returned link detaches it when the last reference (this
/// fd, or a pin) goes.
pub fn raw_tracepoint_open(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointOpen {
        name: 0,
        prog_fd: prog.as_raw_fd() as u32,
    };
    bpf_fd(RAW_TRACEPOINT_OPEN, &mut attr)
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateIter {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Link a (parameterless) iterator program.
pub fn iter_link(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateIter {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: TRACE_ITER,
        ..LinkCreateIter::default()
    };
    bpf_fd(LINK_CREATE, &mut attr)
}

#[repr(C)]
#[derive(Default)]
struct IterCreate {
    link_fd: u32,
    flags: u32,
}

/// A new run of an iterator: read the returned fd to its end.
pub fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = IterCreate {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    bpf_fd(ITER_CREATE, &mut attr)
}

#[repr(C)]
#[derive(Default)]
struct ObjPath {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

pub fn obj_pin(fd: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    let mut attr = ObjPath {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(OBJ_PIN, &mut attr).map(drop)
}

pub fn obj_get(path: &CStr) -> io::Result<OwnedFd> {
    let mut attr = ObjPath {
        pathname: path.as_ptr() as u64,
        ..ObjPath::default()
    };
    bpf_fd(OBJ_GET, &mut attr)
}

/// The start of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}

#[repr(C)]
struct GetInfo {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub fn map_info(map: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = MapInfo::default();
    let mut attr = GetInfo {
        bpf_fd: map.as_raw_fd() as u32,
        info_len: std::mem::size_of::<MapInfo>() as u32,
        info: &mut info as *mut MapInfo as u64,
    };
    bpf(OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}
