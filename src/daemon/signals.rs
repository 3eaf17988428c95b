//! SIGHUP (reload) and SIGTERM/SIGINT (stop) as flags the loop reads between passes, plus a
//! self-pipe that wakes the loop's wait at once (signal-hook does the async-signal-safe part).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::SigId;

/// The signals the daemon handles, installed for the life of this value.
pub struct Signals {
    reload: Arc<AtomicBool>,
    /// The stop signal received (0: none).
    stop: Arc<AtomicUsize>,
    wake: UnixStream,
    ids: Vec<SigId>,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (wake, writer) = UnixStream::pair()?;
        // The handler must never block; the loop's read blocks with a timeout.
        writer.set_nonblocking(true)?;
        let reload = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicUsize::new(0));
        let mut ids = Vec::new();
        ids.push(signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?);
        for sig in [SIGTERM, SIGINT] {
            let value = usize::try_from(sig).unwrap_or(1);
            ids.push(signal_hook::flag::register_usize(
                sig,
                Arc::clone(&stop),
                value,
            )?);
        }
        // Registered after the flags, so the flag is set before the wake-up is seen.
        for sig in [SIGHUP, SIGTERM, SIGINT] {
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                writer.try_clone()?,
            )?);
        }
        Ok(Signals {
            reload,
            stop,
            wake,
            ids,
        })
    }

    /// Sleep up to `timeout`, returning early when a signal arrives.
    pub fn wait(&self, timeout: Duration) {
        if self.stop_requested().is_some() || self.reload.load(Ordering::SeqCst) {
            return;
        }
        if timeout.is_zero() || self.wake.set_read_timeout(Some(timeout)).is_err() {
            return;
        }
        // A byte (a signal), the timeout, or EINTR: each is a wake-up. Bytes left over
        // from a burst of signals only make the next wait return at once.
        let mut buf = [0u8; 64];
        let _ = (&self.wake).read(&mut buf);
    }

    /// True once after each SIGHUP.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    /// The name of the stop signal received, if any.
    pub fn stop_requested(&self) -> Option<&'static str> {
        match i32::try_from(self.stop.load(Ordering::SeqCst)) {
            Ok(SIGTERM) => Some("SIGTERM"),
            Ok(SIGINT) => Some("SIGINT"),
            _ => None,
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
