//! A real systemd booted for a test, isolated from the host: PID 1 of new pid, mount, net,
//! uts, ipc and cgroup namespaces whose root is an overlay of `/` with a tmpfs upper layer.
//! Needs root, util-linux (`unshare`, `nsenter`, `setpriv`, `mount`, `pivot_root`), systemd
//! and a system bus (`dbus`); see `boot` for what the host must offer and why.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long systemd gets to reach `running`/`degraded`. It takes ~1 s on an idle 2-core VM.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs as PID 1 of the new namespaces (`sh`, then `exec`s systemd). Mounts made here live in
/// the new mount namespace only: `unshare --propagation private` made every mount private
/// first, so nothing propagates back to the host, and they all vanish with the namespace.
///
/// What the booted systemd needs, and what keeps it off the host:
/// - its own root: an overlay of the host's `/` (lower, never written) with a tmpfs upper
///   layer, entered with `pivot_root`; its tmpfiles cleanup, journal, /var writes land in the
///   tmpfs. Never boot systemd on the host root: its tmpfiles setup empties the host's /tmp.
/// - fresh `proc` (new pid namespace), `sysfs` read-only (also tells systemd it is in a
///   container), tmpfs on `/run` and `/tmp`, a minimal tmpfs `/dev` (null, zero, full,
///   random, urandom, tty, a private devpts, and `/dev/console` bound to the console log
///   file) with no `/dev/tty0` (no getty on the host's console) and no `/dev/kmsg` (no
///   logging into the host's kernel log). systemd itself logs to its journal (it writes to
///   a console only if it is a tty), so `diagnostics` shows `journalctl`; the console log
///   gets this script's errors and whatever units write to /dev/console.
/// - a writable cgroup2 on `/sys/fs/cgroup`: this VM's host is hybrid (v1 controllers, v2 at
///   `/sys/fs/cgroup/unified`) and its PID 1 is not systemd, so the launcher first moves into
///   a fresh cgroup2 directory of its own and then `unshare --cgroup`s: systemd sees that
///   directory as the root of a unified hierarchy (no controllers, which it tolerates) and
///   builds `init.scope`, `system.slice`, ... under it.
/// - `/proc/sys` and `/proc/sysrq-trigger` read-only, and no CAP_SYS_MODULE, CAP_SYS_TIME,
///   CAP_SYS_RAWIO, CAP_SYSLOG, CAP_WAKE_ALARM in its bounding set: many sysctls are
///   host-global (systemd-sysctl would set fs.protected_*, PID 1 bumps fs.file-max),
///   and nothing in here may load modules or set the clock. `systemd-sysctl` and
///   `systemd-modules-load` are then skipped by their own conditions.
/// - units the host image enables locally (`/etc/systemd/system/*.wants`: postgresql,
///   timesyncd, getty@tty1, apt timers, ...) are disabled in the overlay, except dbus: they
///   slow the boot and have no business in a test. The distribution's defaults stay
///   (journald, dbus, logind).
const PID1_SCRIPT: &str = r#"
set -eu
mount -t tmpfs -o mode=0755 sw-scratch /mnt
mkdir /mnt/upper /mnt/work /mnt/root
mount -t overlay -o lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work sw-root /mnt/root
cd /mnt/root
mount -t proc proc proc
mount --bind proc/sys proc/sys
mount -o remount,bind,ro proc/sys
if [ -e proc/sysrq-trigger ]; then
    mount --bind proc/sysrq-trigger proc/sysrq-trigger
    mount -o remount,bind,ro proc/sysrq-trigger
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 sys/fs/cgroup
mount -t tmpfs -o mode=0755,nosuid tmpfs dev
for d in null zero full random urandom tty; do
    touch dev/$d
    mount --bind /dev/$d dev/$d
done
mkdir dev/pts dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts dev/pts
ln -s pts/ptmx dev/ptmx
touch dev/console
mount --bind /proc/self/fd/1 dev/console
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs tmp
for w in etc/systemd/system/*.wants/*; do
    case "$w" in
        *dbus*) ;;
        *) rm -f "$w" ;;
    esac
done
for u in sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
         sys-fs-fuse-connections.mount systemd-timesyncd.service; do
    ln -sf /dev/null etc/systemd/system/$u
done
mkdir oldroot
pivot_root . oldroot
cd /
umount -l /oldroot
rmdir /oldroot
exec setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-syslog,-wake_alarm \
    env -i container=other /lib/systemd/systemd --system --unit=multi-user.target
"#;

/// Prefix of the host cgroup2 directories the harness creates; `<prefix><pid>-<n>`.
const CGROUP_PREFIX: &str = "sockwarden-it-";

static BOOTS: AtomicUsize = AtomicUsize::new(0);

/// A systemd running as PID 1 of its own namespaces. Killed, reaped and cleaned up on drop.
///
/// The namespace also dies with the thread that booted it (the launcher has
/// `PR_SET_PDEATHSIG`), so a test binary killed mid-test leaves nothing running: keep the
/// value inside the test that booted it, not in a static shared across test threads.
pub struct IsolatedSystemd {
    /// `setpriv … unshare --fork --kill-child`: the parent of the namespace's PID 1.
    launcher: Child,
    /// Host pid of the namespace's PID 1 (systemd).
    pid: u32,
    /// The host cgroup2 directory that is the namespace's cgroup root.
    cgroup: PathBuf,
    /// The launcher's and PID 1 script's output, and /dev/console inside.
    console: PathBuf,
    _dir: tempfile::TempDir,
    /// How long the boot took, until `systemctl is-system-running` said running/degraded.
    pub boot_time: Duration,
}

impl IsolatedSystemd {
    /// Boot a systemd and wait until it is up; panics with systemd's console output if it
    /// does not come up within 60 s.
    pub fn boot() -> IsolatedSystemd {
        match IsolatedSystemd::try_boot() {
            Ok(s) => s,
            Err(e) => panic!("isolated systemd did not boot: {e}"),
        }
    }

    /// Like `boot`, but reports why it could not boot instead of panicking.
    pub fn try_boot() -> Result<IsolatedSystemd, String> {
        let start = Instant::now();
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (namespaces, mounts, cgroups)".into());
        }
        if !Path::new("/lib/systemd/systemd").exists() {
            return Err(
                "/lib/systemd/systemd is missing: install the `systemd` and `dbus` \
                        packages"
                    .into(),
            );
        }
        let cgroup_root = cgroup2_mount()?;
        remove_stale_cgroups(&cgroup_root);
        let n = BOOTS.fetch_add(1, Ordering::SeqCst);
        let cgroup = cgroup_root.join(format!("{CGROUP_PREFIX}{}-{n}", std::process::id()));
        fs::create_dir(&cgroup).map_err(|e| format!("mkdir {}: {e}", cgroup.display()))?;

        let dir = tempfile::Builder::new()
            .prefix("sw-isolated-systemd")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let console = dir.path().join("console.log");
        let log = fs::File::create(&console).map_err(|e| format!("create console log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("dup console log: {e}"))?;
        // `echo 0` moves the writing shell itself into the cgroup, before `unshare --cgroup`
        // makes that cgroup the namespace's root. The pdeathsig ties the namespace's life to
        // this thread; `--kill-child` ties PID 1's to the launcher's.
        let launcher = Command::new("/bin/sh")
            .args([
                "-c",
                r#"echo 0 > "$1/cgroup.procs" && exec setpriv --pdeathsig KILL \
                   unshare --pid --fork --kill-child --mount --net --uts --ipc --cgroup \
                   --propagation private /bin/sh -c "$2""#,
                "sw-launcher",
            ])
            .arg(&cgroup)
            .arg(PID1_SCRIPT)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn();
        let mut launcher = match launcher {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir(&cgroup);
                return Err(format!("spawn /bin/sh for unshare: {e}"));
            }
        };
        let pid = match wait_for_child(&mut launcher) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = launcher.kill();
                let _ = launcher.wait();
                remove_cgroup_tree(&cgroup);
                return Err(format!("{e}\n--- console ---\n{}", read_lossy(&console)));
            }
        };
        let mut systemd = IsolatedSystemd {
            launcher,
            pid,
            cgroup,
            console,
            _dir: dir,
            boot_time: Duration::ZERO,
        };
        systemd.wait_running(start)?;
        systemd.boot_time = start.elapsed();
        Ok(systemd)
    }

    fn wait_running(&mut self, start: Instant) -> Result<(), String> {
        let mut last = String::new();
        while start.elapsed() < BOOT_TIMEOUT {
            if let Ok(Some(status)) = self.launcher.try_wait() {
                return Err(format!(
                    "its launcher exited with {status} during boot\n{}",
                    self.diagnostics()
                ));
            }
            // Fails (cannot connect) until systemd has exec'd and opened its socket.
            let out = self.exec(["systemctl", "is-system-running"]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if last == "running" || last == "degraded" {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "`systemctl is-system-running` still said {last:?} after {BOOT_TIMEOUT:?}\n{}",
            self.diagnostics()
        ))
    }

    /// Host pid of the namespace's PID 1.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The system bus inside, reachable from the host through PID 1's root.
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.pid
        )
    }

    /// Run a command inside every namespace of the isolated systemd (`nsenter -t PID -a`).
    pub fn exec<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-a", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter (util-linux)")
    }

    /// Like `exec`, but panics (with its output) unless the command succeeds; returns stdout.
    pub fn exec_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.exec(&args);
        assert!(
            out.status.success(),
            "{args:?} inside the isolated systemd failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The unit's MainPID as systemd sees it (its own pid namespace); `None` when 0.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        let out = self.exec_ok(["systemctl", "show", "--property=MainPID", "--value", unit]);
        let pid: u32 = out
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("MainPID of {unit}: {out:?}: {e}"));
        (pid != 0).then_some(pid)
    }

    /// The unit's MainPID as seen from the host, i.e. the pid under which the host's `/proc`
    /// shows that process; `None` when the unit has no main process.
    pub fn main_pid_host(&self, unit: &str) -> Option<u32> {
        let ns_pid = self.main_pid(unit)?;
        Some(
            self.host_pid(ns_pid)
                .unwrap_or_else(|| panic!("{unit}'s MainPID {ns_pid} has no host pid")),
        )
    }

    /// Translate a pid of the isolated pid namespace to the host's: the process whose
    /// `NSpid:` ends with `ns_pid` and whose pid namespace is PID 1's.
    pub fn host_pid(&self, ns_pid: u32) -> Option<u32> {
        let ns = fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok()?;
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(host) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(status) = fs::read_to_string(format!("/proc/{host}/status")) else {
                continue;
            };
            let Some(nspids) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
                continue;
            };
            let pids: Vec<&str> = nspids.split_whitespace().collect();
            if pids.len() >= 2
                && pids.last() == Some(&ns_pid.to_string().as_str())
                && fs::read_link(format!("/proc/{host}/ns/pid")).ok().as_ref() == Some(&ns)
            {
                return Some(host);
            }
        }
        None
    }

    /// Translate a host pid into the isolated pid namespace (last field of `NSpid:`).
    pub fn ns_pid(&self, host_pid: u32) -> Option<u32> {
        let status = fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
        let nspids = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        nspids.split_whitespace().last()?.parse().ok()
    }

    /// The boot script's errors and what was written to /dev/console inside.
    pub fn console(&self) -> String {
        read_lossy(&self.console)
    }

    /// Console, journal, failed units and pending jobs: what helps when a boot or a test
    /// goes wrong.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("--- console ({}) ---\n{}", self.console.display(), {
            let c = self.console();
            let lines: Vec<&str> = c.lines().collect();
            lines[lines.len().saturating_sub(80)..].join("\n")
        });
        if !Path::new(&format!("/proc/{}", self.pid)).exists() {
            return s;
        }
        for cmd in [
            &["journalctl", "-b", "--no-pager", "-n", "80"][..],
            &["systemctl", "--failed", "--no-pager"][..],
            &["systemctl", "list-jobs", "--no-pager"][..],
        ] {
            let out = self.exec(cmd);
            s.push_str(&format!(
                "\n--- {} ---\n{}{}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        s
    }
}

impl Drop for IsolatedSystemd {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- isolated systemd (the test failed) ---\n{}",
                self.diagnostics()
            );
        }
        // Killing a pid namespace's init kills every process in it; its mounts (overlay,
        // tmpfs) go with the mount namespace. The launcher reaps PID 1, we reap the launcher.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Let the launcher reap PID 1 before it exits: killed first, it would leave PID 1 a
        // zombie of the host's init.
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.launcher.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        remove_cgroup_tree(&self.cgroup);
    }
}

/// Wait for the launcher's child (the namespace's PID 1) and return its host pid.
fn wait_for_child(launcher: &mut Child) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let children = format!("/proc/{0}/task/{0}/children", launcher.id());
    while Instant::now() < deadline {
        if let Ok(Some(status)) = launcher.try_wait() {
            return Err(format!("the unshare launcher exited with {status}"));
        }
        if let Some(pid) = fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        {
            return Ok(pid);
        }
        thread::sleep(Duration::from_millis(10));
    }
    Err("unshare started no child within 10 s".into())
}

/// Where the host mounts cgroup2 (`/sys/fs/cgroup` unified, `/sys/fs/cgroup/unified` hybrid).
fn cgroup2_mount() -> Result<PathBuf, String> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .ok_or_else(|| "the host has no cgroup2 mounted; systemd needs one".into())
}

/// Remove the cgroups of earlier test processes that died without cleaning up.
fn remove_stale_cgroups(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(owner).exists() {
            remove_cgroup_tree(&entry.path());
        }
    }
}

/// rmdir a cgroup and its descendants, deepest first; retries while the killed processes
/// are still leaving it.
fn remove_cgroup_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        remove_dirs_below(dir);
        if fs::remove_dir(dir).is_ok() || !dir.exists() || Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn remove_dirs_below(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_dirs_below(&entry.path());
            let _ = fs::remove_dir(entry.path());
        }
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
