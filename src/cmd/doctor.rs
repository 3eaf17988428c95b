//! `sockwarden doctor`: probe what works on this machine and say it in words a person can
//! act on. Exit 0: everything works; 1: some remediation cannot work here; 2: cannot scan.

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::{exit, DoctorArgs};
use crate::model::{NetnsId, StateSet};
use crate::output;
use crate::sys::caps::{self, Cap, Capabilities, CgroupLayout};
use crate::sys::netlink::DiagSocket;
use crate::sys::systemd::Systemd;
use crate::sys::{netns, probe, signal, DestroyOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report (`doctor --json` prints these).
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a warn or fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Whether scanning (not only remediation) depends on it.
    #[serde(skip)]
    pub needed_to_scan: bool,
}

fn check(
    check: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        check,
        status,
        detail: detail.into(),
        fix: fix.map(str::to_string),
        needed_to_scan: false,
    }
}

pub fn run(args: &DoctorArgs) -> anyhow::Result<i32> {
    let checks = gather();
    let mut out = io::stdout().lock();
    if args.json {
        output::json_lines(&mut out, &checks)?;
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                let mut text = c.detail.clone();
                if let Some(fix) = &c.fix {
                    text.push_str(&format!(" — fix: {fix}"));
                }
                vec![
                    c.check.to_string(),
                    format!("{:?}", c.status).to_lowercase(),
                    text,
                ]
            })
            .collect();
        output::table(&mut out, &["CHECK", "STATUS", "DETAIL"], &rows, None)?;
    }
    out.flush()?;
    Ok(exit_code(&checks))
}

pub fn exit_code(checks: &[Check]) -> i32 {
    if checks
        .iter()
        .any(|c| c.needed_to_scan && c.status == Status::Fail)
    {
        exit::ERROR
    } else if checks.iter().any(|c| c.status != Status::Ok) {
        exit::FOUND
    } else {
        exit::OK
    }
}

pub fn gather() -> Vec<Check> {
    let caps = Capabilities::current().ok();
    let version = caps::kernel_version();
    vec![
        sock_diag(),
        namespaces(),
        destroy(),
        capabilities(caps),
        pidfd(),
        cgroups(),
        systemd(),
        kernel_limits(version),
    ]
}

fn sock_diag() -> Check {
    let result = DiagSocket::open()
        .and_then(|mut s| s.dump(NetnsId { dev: 0, inode: 0 }, StateSet::default_stuck()));
    let mut c = match result {
        Ok(sockets) => check("sock_diag", Status::Ok, format!("dump works ({} stuck socket(s) in this namespace)", sockets.len()), None),
        Err(e) => check("sock_diag", Status::Fail, e.to_string(), Some("the kernel needs CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG (module tcp_diag: `modprobe tcp_diag`)")),
    };
    c.needed_to_scan = true;
    c
}

fn destroy() -> Check {
    match probe::destroy_support() {
        Ok(DestroyOutcome::Destroyed) => check("sock-destroy", Status::Ok, "SOCK_DESTROY works (probed on a socket of our own in a throwaway namespace)", None),
        Ok(DestroyOutcome::Unsupported) => check("sock-destroy", Status::Fail, "the kernel refused SOCK_DESTROY (EOPNOTSUPP): built without CONFIG_INET_DIAG_DESTROY", Some("use a kernel with CONFIG_INET_DIAG_DESTROY=y; destroy actions cannot work here, signal and restart still can")),
        Ok(DestroyOutcome::NotPermitted) => check("sock-destroy", Status::Fail, "SOCK_DESTROY not permitted: this process lacks CAP_NET_ADMIN", Some(&privilege_hint(&["CAP_NET_ADMIN"]))),
        Ok(other) => check("sock-destroy", Status::Warn, format!("probe destroy answered {other:?}"), None),
        Err(e) => check("sock-destroy", Status::Warn, format!("could not probe: {e}"), Some(&privilege_hint(&["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]))),
    }
}

fn capabilities(caps: Option<Capabilities>) -> Check {
    let Some(caps) = caps else {
        return check(
            "capabilities",
            Status::Warn,
            "could not read CapEff from /proc/self/status",
            None,
        );
    };
    let wanted = [Cap::NetAdmin, Cap::Kill, Cap::SysPtrace, Cap::SysAdmin];
    let lacking: Vec<Cap> = wanted.into_iter().filter(|c| !caps.has(*c)).collect();
    let missing: Vec<String> = lacking
        .iter()
        .map(|c| format!("{} ({})", c.name(), c.needed_for()))
        .collect();
    let names: Vec<&str> = lacking.iter().map(|c| c.name()).collect();
    if missing.is_empty() {
        check(
            "capabilities",
            Status::Ok,
            "CAP_NET_ADMIN, CAP_KILL, CAP_SYS_PTRACE, CAP_SYS_ADMIN present",
            None,
        )
    } else {
        check(
            "capabilities",
            Status::Warn,
            format!("missing: {}", missing.join(", ")),
            Some(&privilege_hint(&names)),
        )
    }
}

fn pidfd() -> Check {
    if signal::pidfd_supported() {
        check(
            "pidfd",
            Status::Ok,
            "pidfd_open works: signals go to exactly the scanned process",
            None,
        )
    } else {
        check("pidfd", Status::Fail, "pidfd_open is not available (Linux < 5.3?)", Some("signal actions are refused without pidfds (a recycled pid must never be signalled); upgrade the kernel"))
    }
}

fn cgroups() -> Check {
    match caps::cgroup_layout() {
        CgroupLayout::V2Unified => check(
            "cgroups",
            Status::Ok,
            "cgroup v2: units read from `0::` lines",
            None,
        ),
        CgroupLayout::Hybrid => check(
            "cgroups",
            Status::Ok,
            "hybrid cgroups: units read from the name=systemd hierarchy",
            None,
        ),
        CgroupLayout::V1 => check(
            "cgroups",
            Status::Ok,
            "cgroup v1: units read from the name=systemd hierarchy",
            None,
        ),
        CgroupLayout::Unknown => check(
            "cgroups",
            Status::Warn,
            "cgroup layout not recognized: systemd units may not be shown",
            None,
        ),
    }
}

fn kernel_limits(version: Option<(u32, u32)>) -> Check {
    let release = caps::kernel_release();
    match version {
        Some(v) if v >= (6, 11) => check("kernel", Status::Ok, format!("{release}: TIME_WAIT destroy (6.0+) and orphan abort fix (6.11) present"), None),
        Some(v) if v >= (6, 0) => check("kernel", Status::Warn, format!("{release}: orphaned sockets may survive an abort before 6.11 unless the fix was backported"), None),
        Some(_) => check("kernel", Status::Warn, format!("{release}: TIME_WAIT and timewait FIN_WAIT2 minisockets cannot be destroyed before 6.0"), Some("those sockets expire on their own; other states can be destroyed")),
        None => check("kernel", Status::Warn, format!("could not parse kernel release `{release}`"), None),
    }
}

fn namespaces() -> Check {
    let list = netns::list_namespaces();
    let n = list.namespaces.len();
    if list.warnings.is_empty() {
        check(
            "namespaces",
            Status::Ok,
            format!("{n} network namespace(s) visible"),
            None,
        )
    } else {
        check(
            "namespaces",
            Status::Warn,
            format!(
                "{n} network namespace(s) visible; {}",
                list.warnings.join("; ")
            ),
            Some(&privilege_hint(&["CAP_SYS_PTRACE", "CAP_SYS_ADMIN"])),
        )
    }
}

/// What to do about missing capabilities: "run as root" helps only a process that is not
/// root already; a root process without them runs under a reduced capability set.
fn privilege_hint(caps: &[&str]) -> String {
    let list = caps.join(", ");
    if nix::unistd::geteuid().is_root() {
        format!(
            "this process runs as root but without {list}: its capability set was reduced (systemd: add them to \
             CapabilityBoundingSet= and AmbientCapabilities=; a container: --cap-add / securityContext.capabilities.add)"
        )
    } else {
        format!("run as root, or grant {list} (systemd: AmbientCapabilities=)")
    }
}

fn systemd() -> Check {
    match Systemd::connect() {
        Ok(sd) => check(
            "systemd",
            Status::Ok,
            format!(
                "systemd's D-Bus API answers at {}: restart actions can work",
                sd.address()
            ),
            None,
        ),
        Err(e) => check(
            "systemd",
            Status::Warn,
            e.to_string(),
            Some("restart actions need systemd as PID 1 with dbus; destroy and signal still work"),
        ),
    }
}
