//! Signalling a process through the pidfd taken when it was scanned, after checking that
//! this very process still holds the socket.

use std::io;

pub use nix::sys::signal::Signal;
use serde::Serialize;

use super::syscall::{pidfd_open, pidfd_send_signal};
use super::{procfs, HolderCheck};
use crate::model::{Inode, Process};

/// What happened to a signal sent to one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalOutcome {
    /// The kernel accepted the signal for that very process.
    Delivered,
    /// The process had already exited (ESRCH, or a zombie waiting to be reaped).
    Exited,
    /// The pid now belongs to another process (start time differs): nothing was sent.
    PidReused,
    /// The process lives on but no longer holds the socket: nothing was sent.
    NoLongerHolds,
    /// EPERM: this process may not signal that one (needs CAP_KILL or the same uid).
    NotPermitted,
    /// ENOSYS: the kernel has no pidfd_open/pidfd_send_signal (Linux < 5.3).
    Unsupported,
    /// Any other errno.
    Failed(i32),
}

impl SignalOutcome {
    fn from_errno(e: &io::Error) -> SignalOutcome {
        match e.raw_os_error() {
            Some(libc::ESRCH) => SignalOutcome::Exited,
            Some(libc::EPERM) | Some(libc::EACCES) => SignalOutcome::NotPermitted,
            Some(libc::ENOSYS) => SignalOutcome::Unsupported,
            Some(errno) => SignalOutcome::Failed(errno),
            None => SignalOutcome::Failed(0),
        }
    }
}

/// Send `signal` to `process` through the pidfd taken when it was scanned, only if that
/// very process is alive and still holds one of `inodes`.
///
/// The pidfd names the process, not the pid: after the process exits its pid may go to
/// another process within the same clock tick (same start time), and the pidfd still says
/// "exited". A process that closed the socket and lives on is not signalled either.
pub fn signal_holder(process: &Process, inodes: &[Inode], signal: Signal) -> SignalOutcome {
    match procfs::check_holder(process, inodes) {
        HolderCheck::Holds { .. } => {}
        HolderCheck::Exited => return SignalOutcome::Exited,
        HolderCheck::NoLongerHolds => return SignalOutcome::NoLongerHolds,
        HolderCheck::NoHandle => return SignalOutcome::Unsupported,
        HolderCheck::Failed(_) => return SignalOutcome::Failed(0),
    }
    let Some(pidfd) = process.handle.pidfd() else {
        return SignalOutcome::Unsupported;
    };
    match pidfd_send_signal(pidfd, Some(signal)) {
        Ok(()) => SignalOutcome::Delivered,
        Err(e) => SignalOutcome::from_errno(&e),
    }
}

/// Whether this kernel has pidfds (Linux ≥ 5.3): `pidfd_open` on our own pid.
pub fn pidfd_supported() -> bool {
    pidfd_open(std::process::id() as libc::pid_t).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pid;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn outcome_json() {
        assert_eq!(
            serde_json::to_string(&SignalOutcome::PidReused)
                .ok()
                .as_deref(),
            Some("\"pid-reused\"")
        );
        assert_eq!(
            serde_json::to_string(&SignalOutcome::NotPermitted)
                .ok()
                .as_deref(),
            Some("\"not-permitted\"")
        );
        assert_eq!(
            serde_json::to_string(&SignalOutcome::Failed(5))
                .ok()
                .as_deref(),
            Some("{\"failed\":5}")
        );
    }

    /// A `sleep` child (started as `name`, a symlink to sleep, so that its comm is `name`)
    /// holding one end of a socket pair; the child as a scan reads it (with its pidfd), and
    /// the socket's inode.
    fn holder(name: &[u8]) -> (Child, Arc<Process>, Inode, std::os::unix::net::UnixStream) {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join(std::ffi::OsStr::from_bytes(name));
        std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink");
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&link);
        cmd.arg("30");
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                crate::sys::syscall::check(libc::fcntl(fd, libc::F_SETFD, 0)).map(|_| ())
            });
        }
        let child = cmd.spawn().expect("spawn sleep");
        drop(theirs);
        // The child's end has an inode of its own: find it in the child's fd table.
        let inode = {
            let mut found = None;
            for _ in 0..200 {
                if let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", child.id())) {
                    for e in entries.flatten() {
                        let link = std::fs::read_link(e.path()).unwrap_or_default();
                        let text = link.to_string_lossy().into_owned();
                        if let Some(n) = text
                            .strip_prefix("socket:[")
                            .and_then(|t| t.strip_suffix(']'))
                            .and_then(|t| t.parse::<u64>().ok())
                        {
                            found = Some(Inode(n));
                        }
                    }
                }
                if found.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            found.expect("the child holds the socket")
        };
        let scan = procfs::scan_owners(&crate::model::InodeSet::from_iter([inode]));
        let process = scan.owners[&inode]
            .iter()
            .find(|o| o.process.id.pid == Pid(child.id() as i32))
            .expect("the child is an owner")
            .process
            .clone();
        (child, process, inode, ours)
    }

    #[test]
    fn pidfds_exist_here() {
        assert!(pidfd_supported());
    }

    #[test]
    fn delivers_to_the_process_that_holds_the_socket() {
        let (mut child, process, inode, _ours) = holder(b"holder");
        assert_eq!(
            signal_holder(&process, &[inode], Signal::SIGTERM),
            SignalOutcome::Delivered
        );
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    /// Regression (trust issue): a process whose name is not UTF-8 failed with no message.
    #[test]
    fn a_process_whose_name_is_not_utf8_is_signalled() {
        let (mut child, process, inode, _ours) = holder(b"bad\xff\xfename");
        assert!(process.comm.contains('\u{fffd}'), "{:?}", process.comm);
        assert_eq!(
            signal_holder(&process, &[inode], Signal::SIGTERM),
            SignalOutcome::Delivered
        );
        assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn a_process_that_no_longer_holds_the_socket_is_not_signalled() {
        let (mut child, process, _inode, _ours) = holder(b"holder");
        assert_eq!(
            signal_holder(&process, &[Inode(1)], Signal::SIGKILL),
            SignalOutcome::NoLongerHolds
        );
        std::thread::sleep(Duration::from_millis(50));
        let still_running = child.try_wait().expect("try_wait").is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert!(still_running, "the child must not have been signalled");
    }

    /// What a pid reused within the same clock tick looks like: the scanned process exited
    /// and another has its pid *and* its start time. Identity by (pid, start time) would
    /// take the newcomer for it; the pidfd taken at scan time does not.
    #[test]
    fn a_newcomer_with_the_same_pid_and_start_time_is_not_signalled() {
        let (mut gone, scanned, inode, _a) = holder(b"planned");
        let (mut newcomer, now, new_inode, _b) = holder(b"newcomer");
        gone.kill().expect("kill");
        gone.wait().expect("reap");
        // The plan's process: the dead one's handle, the newcomer's pid and start time.
        let stale = Process {
            id: now.id,
            handle: scanned.handle.clone(),
            ..(*now).clone()
        };
        assert_eq!(
            signal_holder(&stale, &[inode, new_inode], Signal::SIGKILL),
            SignalOutcome::Exited
        );
        std::thread::sleep(Duration::from_millis(50));
        let still_running = newcomer.try_wait().expect("try_wait").is_none();
        let _ = newcomer.kill();
        let _ = newcomer.wait();
        assert!(still_running, "the newcomer must not have been signalled");
    }

    #[test]
    fn a_zombie_has_exited() {
        let (mut child, process, inode, _ours) = holder(b"holder");
        child.kill().expect("kill");
        // Not reaped yet: wait until the kernel shows it as a zombie.
        for _ in 0..200 {
            if procfs::read_stat(process.id.pid)
                .map(|s| s.state == 'Z')
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let outcome = signal_holder(&process, &[inode], Signal::SIGTERM);
        let status = child.wait().expect("wait");
        assert_eq!(outcome, SignalOutcome::Exited);
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn without_a_handle_nothing_is_sent() {
        let (mut child, process, inode, _ours) = holder(b"holder");
        let bare = Process {
            handle: crate::model::ProcessHandle::none(),
            ..(*process).clone()
        };
        assert_eq!(
            signal_holder(&bare, &[inode], Signal::SIGKILL),
            SignalOutcome::Unsupported
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
