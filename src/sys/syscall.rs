//! The raw system calls nix does not wrap, and the one helper that turns a C-style -1
//! into the `io::Error` for errno. Every `unsafe` block that calls libc directly goes
//! through [`check`].

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

/// A libc return value of -1 into the `io::Error` for errno; anything else passes through.
pub fn check<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `pidfd_open(2)`: an fd that refers to this process and no other, even after pid reuse.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let ret = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    let fd = i32::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: on success the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)` with no siginfo (like kill(2)); `None` sends no signal and only
/// checks that the process is alive and may be signalled (like `kill -0`).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Option<Signal>) -> io::Result<()> {
    let signo = signal.map_or(0, |s| s as libc::c_int);
    // SAFETY: the pidfd is open for the duration of the call; a null siginfo is allowed and
    // makes the kernel fill it in as kill(2) would.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    })?;
    Ok(())
}
