//! Probes that try a kernel feature for real on sockets of our own, in a throwaway network
//! namespace, never on anyone else's socket.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{unshare, CloneFlags};

use super::netlink::DiagSocket;
use super::syscall::check;
use super::{DestroyOutcome, SysError};
use crate::model::{NetnsId, StateSet, TcpState};

/// Whether SOCK_DESTROY works here: in a new network namespace (on a thread that ends with
/// it), make one CLOSE_WAIT socket on loopback, dump it and destroy it.
pub fn destroy_support() -> Result<DestroyOutcome, SysError> {
    let handle = std::thread::spawn(|| -> Result<DestroyOutcome, SysError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
            SysError::new("unshare(CLONE_NEWNET)", io::Error::from(e))
                .with_hint("needs CAP_SYS_ADMIN to create a throwaway namespace for the probe")
        })?;
        bring_loopback_up().map_err(|e| SysError::new("bring lo up in the probe namespace", e))?;
        let io_err = |call: &str| {
            let call = call.to_string();
            move |e: io::Error| SysError::new(call.clone(), e)
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
        let client = TcpStream::connect(listener.local_addr().map_err(io_err("getsockname"))?)
            .map_err(io_err("connect"))?;
        let (server, _) = listener.accept().map_err(io_err("accept"))?;
        client
            .shutdown(Shutdown::Write)
            .map_err(io_err("shutdown"))?;
        let port = server.local_addr().map_err(io_err("getsockname"))?.port();

        let mut diag = DiagSocket::open()?;
        let states: StateSet = [TcpState::CloseWait].into_iter().collect();
        // Loopback delivers the FIN at once, but give the stack a few tries.
        for _ in 0..50 {
            let dumped = diag.dump(NetnsId { dev: 0, inode: 0 }, states)?;
            if let Some(ours) = dumped.iter().find(|s| s.local.port() == port) {
                return diag.destroy(ours);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(SysError::new(
            "probe: find our CLOSE_WAIT socket in the dump",
            io::Error::new(
                io::ErrorKind::NotFound,
                "the probe socket never reached CLOSE_WAIT",
            ),
        ))
    });
    handle.join().unwrap_or_else(|_| {
        Err(SysError::new(
            "probe thread",
            io::Error::other("the probe thread panicked"),
        ))
    })
}

/// Set IFF_UP on `lo` in the calling thread's network namespace (a new namespace starts
/// with it down, and nothing connects on 127.0.0.1 until it is up).
pub fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into `req`, which lives for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, which lives for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}
