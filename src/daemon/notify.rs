//! The systemd notification protocol (`Type=notify`), without libsystemd: one datagram per
//! message to `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where to send notifications, and how often the watchdog wants a ping.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing (not run by systemd).
    pub fn none() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog is ours only
    /// when `WATCHDOG_PID` is absent or names this process).
    pub fn from_env() -> io::Result<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::new(
            socket.as_deref().and_then(|s| s.to_str()),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// [`Notifier::from_env`] with the environment passed in.
    pub fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> io::Result<Notifier> {
        let target = match socket.filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => {
                let socket = UnixDatagram::unbound()?;
                // A notification is never worth a hung loop: drop it when the queue is full.
                socket.set_nonblocking(true)?;
                Some((socket, address(name)?))
            }
        };
        let ours = watchdog_pid.map_or(true, |p| p.trim().parse::<u32>().ok() == Some(own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 2);
        Ok(Notifier { target, watchdog })
    }

    /// Whether anything is listening (systemd started us with `Type=notify`).
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, or `None` without one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Send one message (`KEY=VALUE` lines); nothing when not run by systemd. When the
    /// receiver's queue is full the message is dropped (logged at debug), never waited on.
    pub fn send(&self, message: &str) -> io::Result<()> {
        match &self.target {
            Some((socket, addr)) => match socket.send_to_addr(message.as_bytes(), addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tracing::debug!("sd_notify: the receiver's queue is full; dropped {message:?}");
                    Ok(())
                }
                sent => sent.map(|_| ()),
            },
            None => Ok(()),
        }
    }

    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// Before a reload (SIGHUP): `RELOADING=1` with the monotonic time systemd wants
    /// (sd_notify(3)); [`ready`](Self::ready) again when it is done.
    pub fn reloading(&self) -> io::Result<()> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(io::Error::from)?;
        let usec = u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(now.tv_nsec()).unwrap_or(0) / 1_000;
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
        ))
    }

    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }
}

/// A status must stay on its one `STATUS=` line.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

fn address(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None => SocketAddr::from_pathname(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let path_text = path.to_str().expect("utf-8 path");
        let n = Notifier::new(Some(path_text), Some("400000"), None, 1).expect("notifier");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(200)));
        n.ready("pass 1: 0 stuck").expect("send");
        assert_eq!(received(&listener), "READY=1\nSTATUS=pass 1: 0 stuck");
        n.watchdog().expect("send");
        assert_eq!(received(&listener), "WATCHDOG=1");
        n.reloading().expect("send");
        let reloading = received(&listener);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=")
                && reloading.ends_with("\nSTATUS=reloading"),
            "{reloading}"
        );
        n.stopping("bye\nnow").expect("send");
        assert_eq!(received(&listener), "STOPPING=1\nSTATUS=bye now");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sockwarden-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        let n = Notifier::new(Some(&format!("@{name}")), None, None, 1).expect("notifier");
        n.status("ok").expect("send");
        assert_eq!(received(&listener), "STATUS=ok");
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_the_watchdog_is_someone_elses() {
        let n = Notifier::new(None, Some("1000000"), None, 1).expect("notifier");
        assert!(!n.enabled());
        n.ready("x").expect("a no-op");
        assert_eq!(n.watchdog_interval(), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n");
        let _listener = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.to_str(), Some("1000000"), Some("42"), 7).expect("notifier");
        assert_eq!(
            n.watchdog_interval(),
            None,
            "WATCHDOG_PID names another process"
        );
    }
}
