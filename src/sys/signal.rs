//! Signalling a process through a pidfd, after checking its start time still matches.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use nix::sys::signal::Signal;
use serde::Serialize;

use super::procfs;
use crate::model::ProcessId;

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

/// A signal name or number that is not a signal, with the names that are.
#[derive(Debug, thiserror::Error)]
#[error("unknown signal `{name}`; expected a number or one of: {}", valid_names().join(", "))]
pub struct UnknownSignal {
    pub name: String,
}

fn valid_names() -> Vec<&'static str> {
    Signal::iterator().map(|s| s.as_str()).collect()
}

/// Parse `SIGHUP`, `HUP`, `hup` or `1`.
pub fn parse_signal(name: &str) -> Result<Signal, UnknownSignal> {
    let unknown = || UnknownSignal {
        name: name.to_string(),
    };
    let trimmed = name.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = trimmed.parse().map_err(|_| unknown())?;
        return Signal::try_from(n).map_err(|_| unknown());
    }
    let upper = trimmed.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().map_err(|_| unknown())
}

/// Turn a raw syscall's -1 into the `io::Error` for errno.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `pidfd_open(2)`: an fd that refers to this process and no other, even after pid reuse.
fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let ret = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    let fd = i32::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: on success the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)` with no siginfo (like kill(2)).
fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: the pidfd is open for the duration of the call; a null siginfo is allowed and
    // makes the kernel fill it in as kill(2) would.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    })?;
    Ok(())
}

/// Send `signal` to `target`, only if the process with that pid is still the one that
/// started at `target.start_time`.
///
/// The pidfd is opened FIRST and the start time checked after: if it matches then, the
/// pidfd refers to that very process, and a later pid reuse cannot redirect the signal.
pub fn signal_process(target: ProcessId, signal: Signal) -> SignalOutcome {
    let pidfd = match pidfd_open(target.pid.0) {
        Ok(fd) => fd,
        Err(e) => return SignalOutcome::from_errno(&e),
    };
    let stat = match procfs::read_stat(target.pid) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return SignalOutcome::Exited,
        Err(e) => return SignalOutcome::from_errno(&e),
    };
    if stat.start_time != target.start_time {
        return SignalOutcome::PidReused;
    }
    if stat.state == 'Z' || stat.state == 'X' {
        // The kernel would accept a signal to a zombie and do nothing with it.
        return SignalOutcome::Exited;
    }
    match pidfd_send_signal(&pidfd, signal) {
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
    use std::time::Duration;

    #[test]
    fn parse_signal_spellings() {
        for spelling in ["SIGHUP", "HUP", "hup", "SigHup", " 1 "] {
            assert_eq!(
                parse_signal(spelling).ok(),
                Some(Signal::SIGHUP),
                "{spelling}"
            );
        }
        assert_eq!(parse_signal("15").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("kill").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGUSR2").ok(), Some(Signal::SIGUSR2));
        for bad in ["", "0", "99", "SIGFOO", "-9", "sig", "1x"] {
            let err = parse_signal(bad).expect_err(bad);
            let text = err.to_string();
            assert!(text.contains(&format!("`{bad}`")), "{text}");
            assert!(
                text.contains("SIGTERM") && text.contains("SIGHUP"),
                "{text}"
            );
        }
    }

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

    fn sleeper() -> (Child, ProcessId) {
        let child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = Pid(child.id() as i32);
        let start_time = procfs::start_time(pid).expect("start time");
        (child, ProcessId { pid, start_time })
    }

    #[test]
    fn pidfds_exist_here() {
        assert!(pidfd_supported());
    }

    #[test]
    fn delivers_to_the_right_process() {
        let (mut child, id) = sleeper();
        assert_eq!(
            signal_process(id, Signal::SIGTERM),
            SignalOutcome::Delivered
        );
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn wrong_start_time_sends_nothing() {
        let (mut child, id) = sleeper();
        let stale = ProcessId {
            start_time: id.start_time.wrapping_sub(1),
            ..id
        };
        assert_eq!(
            signal_process(stale, Signal::SIGKILL),
            SignalOutcome::PidReused
        );
        std::thread::sleep(Duration::from_millis(50));
        let still_running = child.try_wait().expect("try_wait").is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert!(still_running, "the child must not have been signalled");
    }

    #[test]
    fn reaped_process_has_exited() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = Pid(child.id() as i32);
        let start_time = procfs::start_time(pid).unwrap_or(0);
        child.wait().expect("wait");
        assert_eq!(
            signal_process(ProcessId { pid, start_time }, Signal::SIGTERM),
            SignalOutcome::Exited
        );
    }

    #[test]
    fn zombie_has_exited() {
        let (mut child, id) = sleeper();
        child.kill().expect("kill");
        // Not reaped yet: wait until the kernel shows it as a zombie.
        for _ in 0..200 {
            if procfs::read_stat(id.pid)
                .map(|s| s.state == 'Z')
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let outcome = signal_process(id, Signal::SIGTERM);
        let status = child.wait().expect("wait");
        assert_eq!(outcome, SignalOutcome::Exited);
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
