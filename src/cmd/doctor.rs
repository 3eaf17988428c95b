//! `sockwarden doctor`: probe what works on this machine and say it in words a person can
//! act on. Exit 0: everything works; 1: some remediation cannot work here; 2: cannot scan.

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::{exit, DoctorArgs};
use crate::model::StateSet;
use crate::output;
use crate::sys::caps::{self, Cap, Capabilities, CgroupLayout};
use crate::sys::{DestroyOutcome, System};

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

pub fn run(args: &DoctorArgs, sys: &dyn System) -> anyhow::Result<i32> {
    let checks = gather(sys);
    let mut out = io::stdout().lock();
    if args.json {
        output::json_lines(&mut out, "check", &checks)?;
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

/// Every check, over the kernel boundary (so that each answer can be tested with the fake).
pub fn gather(sys: &dyn System) -> Vec<Check> {
    let caps = sys.capabilities().ok();
    let kernel = sys.kernel();
    vec![
        sock_diag(sys),
        namespaces(sys),
        destroy(sys),
        capabilities(caps, sys.is_root()),
        pidfd(sys),
        cgroups(kernel.cgroups),
        systemd(sys),
        kernel_limits(&kernel.release),
        watcher(sys),
    ]
}

fn watcher(sys: &dyn System) -> Check {
    let watcher = sys.watcher();
    let fix = match (&watcher.bpf, &watcher.index) {
        (Err(_), _) => Some("without eBPF, ages come from tcp_info and observation and owners from a walk of /proc; the reason says what is missing"),
        (Ok(()), Err(_)) => Some("the daemon (`sockwarden run`) creates the index and pins it in /sys/fs/bpf (mount bpffs there: `mount -t bpf bpf /sys/fs/bpf`)"),
        _ => None,
    };
    let status = if watcher.name() == "bpf" {
        Status::Ok
    } else {
        Status::Warn
    };
    check(
        "watcher",
        status,
        format!("{}: {}", watcher.name(), watcher.describe()),
        fix,
    )
}

fn sock_diag(sys: &dyn System) -> Check {
    // The namespace sockwarden runs in is listed first.
    let result = sys
        .namespaces()
        .and_then(|list| match list.namespaces.first() {
            Some(own) => sys.dump(own, StateSet::default_stuck()).map(|d| d.sockets),
            None => Ok(Vec::new()),
        });
    let mut c = match result {
        Ok(sockets) => check("sock_diag", Status::Ok, format!("dump works ({} stuck socket(s) in this namespace)", sockets.len()), None),
        Err(e) => check("sock_diag", Status::Fail, e.to_string(), Some("the kernel needs CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG (module tcp_diag: `modprobe tcp_diag`)")),
    };
    c.needed_to_scan = true;
    c
}

fn destroy(sys: &dyn System) -> Check {
    match sys.probe_destroy() {
        Ok(DestroyOutcome::Destroyed) => check("sock-destroy", Status::Ok, "SOCK_DESTROY works (probed on a socket of our own in a throwaway namespace)", None),
        Ok(DestroyOutcome::Unsupported) => check("sock-destroy", Status::Fail, "the kernel refused SOCK_DESTROY (EOPNOTSUPP): built without CONFIG_INET_DIAG_DESTROY", Some("use a kernel with CONFIG_INET_DIAG_DESTROY=y; destroy actions cannot work here, signal and restart still can")),
        Ok(DestroyOutcome::NotPermitted) => check("sock-destroy", Status::Fail, "SOCK_DESTROY not permitted: this process lacks CAP_NET_ADMIN", Some(&privilege_hint(sys.is_root(), &["CAP_NET_ADMIN"]))),
        Ok(other) => check("sock-destroy", Status::Warn, format!("probe destroy answered {other:?}"), None),
        Err(e) => check("sock-destroy", Status::Warn, format!("could not probe: {e}"), Some(&privilege_hint(sys.is_root(), &["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]))),
    }
}

fn capabilities(caps: Option<Capabilities>, root: bool) -> Check {
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
            Some(&privilege_hint(root, &names)),
        )
    }
}

fn pidfd(sys: &dyn System) -> Check {
    if sys.pidfd_supported() {
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

fn cgroups(layout: CgroupLayout) -> Check {
    match layout {
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

fn kernel_limits(release: &str) -> Check {
    match caps::parse_kernel_version(release) {
        Some(v) if v >= (6, 11) => check("kernel", Status::Ok, format!("{release}: TIME_WAIT destroy (6.0+) and orphan abort fix (6.11) present"), None),
        Some(v) if v >= (6, 0) => check("kernel", Status::Warn, format!("{release}: orphaned sockets may survive an abort before 6.11 unless the fix was backported"), None),
        Some(_) => check("kernel", Status::Warn, format!("{release}: TIME_WAIT and timewait FIN_WAIT2 minisockets cannot be destroyed before 6.0"), Some("those sockets expire on their own; other states can be destroyed")),
        None => check("kernel", Status::Warn, format!("could not parse kernel release `{release}`"), None),
    }
}

fn namespaces(sys: &dyn System) -> Check {
    let list = match sys.namespaces() {
        Ok(list) => list,
        Err(e) => return check("namespaces", Status::Fail, e.to_string(), None),
    };
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
            Some(&privilege_hint(
                sys.is_root(),
                &["CAP_SYS_PTRACE", "CAP_SYS_ADMIN"],
            )),
        )
    }
}

/// What to do about missing capabilities: "run as root" helps only a process that is not
/// root already; a root process without them runs under a reduced capability set.
fn privilege_hint(root: bool, caps: &[&str]) -> String {
    let list = caps.join(", ");
    if root {
        format!(
            "this process runs as root but without {list}: its capability set was reduced (systemd: add them to \
             CapabilityBoundingSet= and AmbientCapabilities=; a container: --cap-add / securityContext.capabilities.add)"
        )
    } else {
        format!("run as root, or grant {list} (systemd: AmbientCapabilities=)")
    }
}

fn systemd(sys: &dyn System) -> Check {
    match sys.probe_systemd() {
        Ok(address) => check(
            "systemd",
            Status::Ok,
            format!("systemd's D-Bus API answers at {address}: restart actions can work"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{FakeSystem, Probes};

    fn report(probes: Probes) -> (Vec<Check>, i32) {
        let sys = FakeSystem {
            probes,
            ..FakeSystem::default()
        };
        let checks = gather(&sys);
        let code = exit_code(&checks);
        (checks, code)
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no {name} check"))
    }

    /// Each machine doctor may meet, and what it must say about it.
    #[test]
    fn what_doctor_says_about_each_machine() {
        let everything = Probes::default();
        let cap_net_admin = 1u64 << Cap::NetAdmin.number();
        struct Case {
            what: &'static str,
            probes: Probes,
            check: &'static str,
            status: Status,
            says: &'static str,
            code: i32,
        }
        let cases = [
            Case {
                what: "everything works",
                probes: everything.clone(),
                check: "sock-destroy",
                status: Status::Ok,
                says: "SOCK_DESTROY works",
                code: exit::OK,
            },
            Case {
                what: "a kernel without CONFIG_INET_DIAG_DESTROY",
                probes: Probes {
                    destroy: DestroyOutcome::Unsupported,
                    ..everything.clone()
                },
                check: "sock-destroy",
                status: Status::Fail,
                says: "CONFIG_INET_DIAG_DESTROY",
                code: exit::FOUND,
            },
            Case {
                what: "root without CAP_NET_ADMIN: naming the capability, not 'run as root'",
                probes: Probes {
                    destroy: DestroyOutcome::NotPermitted,
                    caps: everything.caps & !cap_net_admin,
                    ..everything.clone()
                },
                check: "sock-destroy",
                status: Status::Fail,
                says: "runs as root but without CAP_NET_ADMIN",
                code: exit::FOUND,
            },
            Case {
                what: "not root",
                probes: Probes {
                    destroy: DestroyOutcome::NotPermitted,
                    root: false,
                    caps: 0,
                    ..everything.clone()
                },
                check: "capabilities",
                status: Status::Warn,
                says: "run as root, or grant CAP_NET_ADMIN",
                code: exit::FOUND,
            },
            Case {
                what: "no pidfds",
                probes: Probes {
                    pidfd: false,
                    ..everything.clone()
                },
                check: "pidfd",
                status: Status::Fail,
                says: "signal actions are refused",
                code: exit::FOUND,
            },
            Case {
                what: "no systemd",
                probes: Probes {
                    systemd: Err("connection refused".into()),
                    ..everything.clone()
                },
                check: "systemd",
                status: Status::Warn,
                says: "connection refused",
                code: exit::FOUND,
            },
            Case {
                what: "a kernel before 6.0",
                probes: Probes {
                    kernel_release: "5.15.0-91-generic".into(),
                    ..everything.clone()
                },
                check: "kernel",
                status: Status::Warn,
                says: "cannot be destroyed before 6.0",
                code: exit::FOUND,
            },
            Case {
                what: "no eBPF (e.g. no CAP_BPF): sock_diag and /proc, a warning naming why",
                probes: Probes {
                    watcher: crate::sys::Watcher::without_bpf("load the socket_files program: Operation not permitted (loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN))"),
                    ..everything.clone()
                },
                check: "watcher",
                status: Status::Warn,
                says: "sock-diag: sock_diag and /proc only, no eBPF: load the socket_files program: Operation not permitted (loading BPF programs needs CAP_BPF",
                code: exit::FOUND,
            },
            Case {
                what: "eBPF, but no daemon has pinned an index yet",
                probes: Probes {
                    watcher: crate::sys::Watcher {
                        index: Err("none pinned yet (only the daemon creates the index)".into()),
                        ..everything.watcher.clone()
                    },
                    ..everything.clone()
                },
                check: "watcher",
                status: Status::Warn,
                says: "bpf-owners: no eBPF index of state entries (none pinned yet",
                code: exit::FOUND,
            },
        ];
        for case in cases {
            let (checks, code) = report(case.probes);
            let c = find(&checks, case.check);
            let text = format!("{} {}", c.detail, c.fix.as_deref().unwrap_or(""));
            assert_eq!(c.status, case.status, "{}: {text}", case.what);
            assert!(text.contains(case.says), "{}: {text}", case.what);
            assert_eq!(code, case.code, "{}", case.what);
        }
    }
}
