//! Capabilities and kernel features: what this process may do here (CapEff, pidfd, kernel version).

use std::fmt;
use std::io;

use serde::Serialize;

/// The capabilities sockwarden's actions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Cap {
    /// Reading other users' `/proc/<pid>/fd` without ptrace access.
    DacReadSearch,
    /// Signalling processes of other users.
    Kill,
    /// SOCK_DESTROY (in the socket's network namespace).
    NetAdmin,
    /// Reading other users' `/proc/<pid>/fd` and `exe`.
    SysPtrace,
    /// setns into other network namespaces.
    SysAdmin,
}

impl Cap {
    pub const ALL: [Cap; 5] = [
        Cap::NetAdmin,
        Cap::Kill,
        Cap::SysPtrace,
        Cap::SysAdmin,
        Cap::DacReadSearch,
    ];

    /// The bit number in `CapEff` (`include/uapi/linux/capability.h`).
    pub fn number(self) -> u32 {
        match self {
            Cap::DacReadSearch => 2,
            Cap::Kill => 5,
            Cap::NetAdmin => 12,
            Cap::SysPtrace => 19,
            Cap::SysAdmin => 21,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cap::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Cap::Kill => "CAP_KILL",
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysPtrace => "CAP_SYS_PTRACE",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    /// What sockwarden cannot do without it, for `doctor`.
    pub fn needed_for(self) -> &'static str {
        match self {
            Cap::DacReadSearch => "reading other users' /proc/<pid>/fd (owners)",
            Cap::Kill => "signalling other users' processes",
            Cap::NetAdmin => "destroying sockets (SOCK_DESTROY)",
            Cap::SysPtrace => "reading other users' /proc/<pid>/fd and exe (owners)",
            Cap::SysAdmin => "entering other network namespaces (setns)",
        }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The effective capability set of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    effective: u64,
}

impl Capabilities {
    /// Read `CapEff:` from `/proc/self/status`.
    pub fn current() -> io::Result<Capabilities> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        Capabilities::from_status(&status).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no CapEff: line in /proc/self/status",
            )
        })
    }

    /// Parse the `CapEff:` line (hex) of a `/proc/<pid>/status` text.
    pub fn from_status(status: &str) -> Option<Capabilities> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16)
            .ok()
            .map(Capabilities::from_mask)
    }

    pub fn from_mask(effective: u64) -> Capabilities {
        Capabilities { effective }
    }

    pub fn mask(self) -> u64 {
        self.effective
    }

    pub fn has(self, cap: Cap) -> bool {
        self.effective & (1u64 << cap.number()) != 0
    }

    /// The capabilities of [`Cap::ALL`] this process lacks.
    pub fn missing(self) -> Vec<Cap> {
        Cap::ALL.into_iter().filter(|c| !self.has(*c)).collect()
    }
}

/// The kernel release as `uname -r` prints it, or `unknown`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// (major, minor) of the running kernel.
pub fn kernel_version() -> Option<(u32, u32)> {
    parse_kernel_version(&kernel_release())
}

/// `6.18.44-fc-v657` => (6, 18); `5.4` => (5, 4).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// How cgroups are mounted, which says where a process's systemd unit is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupLayout {
    /// cgroup2 at `/sys/fs/cgroup`: the `0::` line of `/proc/<pid>/cgroup`.
    V2Unified,
    /// v1 controllers plus a cgroup2 (usually `/sys/fs/cgroup/unified`): the `name=systemd` line.
    Hybrid,
    /// v1 only: the `name=systemd` line.
    V1,
    Unknown,
}

/// The cgroup layout of this host, from `/proc/self/mounts`.
pub fn cgroup_layout() -> CgroupLayout {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| cgroup_layout_from_mounts(&m))
        .unwrap_or(CgroupLayout::Unknown)
}

/// Classify a `/proc/self/mounts` text.
pub fn cgroup_layout_from_mounts(mounts: &str) -> CgroupLayout {
    let mut v2_at_root = false;
    let mut v2_elsewhere = false;
    let mut v1 = false;
    for line in mounts.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_src), Some(target), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !target.starts_with("/sys/fs/cgroup") {
            continue;
        }
        match fstype {
            "cgroup2" if target == "/sys/fs/cgroup" => v2_at_root = true,
            "cgroup2" => v2_elsewhere = true,
            "cgroup" => v1 = true,
            _ => {}
        }
    }
    match (v2_at_root, v1, v2_elsewhere) {
        (true, _, _) => CgroupLayout::V2Unified,
        (false, true, true) => CgroupLayout::Hybrid,
        (false, true, false) => CgroupLayout::V1,
        _ => CgroupLayout::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capeff_parsing() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";
        let caps = Capabilities::from_status(root).expect("CapEff");
        assert!(Cap::ALL.iter().all(|c| caps.has(*c)));
        assert!(caps.missing().is_empty());

        // Only CAP_NET_ADMIN (bit 12) and CAP_KILL (bit 5).
        let caps = Capabilities::from_status("CapEff:\t0000000000001020\n").expect("CapEff");
        assert!(caps.has(Cap::NetAdmin) && caps.has(Cap::Kill));
        assert_eq!(
            caps.missing(),
            vec![Cap::SysPtrace, Cap::SysAdmin, Cap::DacReadSearch]
        );

        let none = Capabilities::from_status("CapEff:\t0000000000000000\n").expect("CapEff");
        assert_eq!(none.missing().len(), 5);
        assert_eq!(Capabilities::from_status("Name:\tx\n"), None);
        assert_eq!(Capabilities::from_status("CapEff:\tzz\n"), None);
        assert_eq!(Cap::SysPtrace.to_string(), "CAP_SYS_PTRACE");
    }

    #[test]
    /// Each capability read from CapEff is the bit the kernel shows for it.
    fn current_caps_match_the_kernel() {
        let caps = Capabilities::current().expect("CapEff readable");
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .expect("CapEff line")
            .trim();
        let mask = u64::from_str_radix(hex, 16).expect("hex mask");
        for cap in Cap::ALL {
            assert_eq!(
                caps.has(cap),
                mask & (1 << cap.number()) != 0,
                "{}",
                cap.name()
            );
        }
    }

    #[test]
    fn kernel_version_parsing() {
        let cases = [
            ("6.18.44-fc-v657", Some((6, 18))),
            ("5.4.0-150-generic", Some((5, 4))),
            ("6.1", Some((6, 1))),
            ("4.19.0rc1", Some((4, 19))),
            ("6", None),
            ("", None),
            ("x.y", None),
        ];
        for (release, want) in cases {
            assert_eq!(parse_kernel_version(release), want, "{release}");
        }
        assert!(kernel_version().is_some(), "{}", kernel_release());
    }

    #[test]
    fn cgroup_layouts() {
        let unified = "sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        let v1 = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                  cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n";
        assert_eq!(cgroup_layout_from_mounts(unified), CgroupLayout::V2Unified);
        assert_eq!(cgroup_layout_from_mounts(hybrid), CgroupLayout::Hybrid);
        assert_eq!(cgroup_layout_from_mounts(v1), CgroupLayout::V1);
        assert_eq!(
            cgroup_layout_from_mounts("proc /proc proc rw 0 0\n"),
            CgroupLayout::Unknown
        );
        assert_eq!(cgroup_layout_from_mounts(""), CgroupLayout::Unknown);
    }
}
