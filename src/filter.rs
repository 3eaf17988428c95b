//! Which sockets a command is about: states, age, owner command, unit, port, namespace.
//! The same selectors serve `scan`, `clean` and `policy explain`.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::{StateSet, StuckSocket};
/// Globs are the policy's, so a selector on the command line matches as in a policy file.
pub use crate::policy::Pattern;

/// Which namespaces to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSelector {
    /// Every namespace of the host (the default).
    All,
    /// The namespace sockwarden runs in.
    Host,
    /// A `/run/netns` name (as `ip netns` shows it), or a readable name from a scan.
    Named(String),
    /// A namespace file: `/proc/<pid>/ns/net`, `/run/netns/NAME`, a bind mount.
    Path(PathBuf),
}

impl NetnsSelector {
    pub fn parse(text: &str) -> NetnsSelector {
        match text {
            "all" | "" => NetnsSelector::All,
            "host" => NetnsSelector::Host,
            t if t.contains('/') => NetnsSelector::Path(PathBuf::from(t)),
            t => NetnsSelector::Named(t.to_string()),
        }
    }
}

/// Selectors applied after the kernel dump (states and namespace are applied by the dump).
#[derive(Debug, Clone)]
pub struct SocketFilter {
    pub states: StateSet,
    pub netns: NetnsSelector,
    pub older_than: Option<Duration>,
    /// Glob on an owner's command name (`comm`).
    pub process: Option<Pattern>,
    /// Glob on an owner's systemd unit.
    pub unit: Option<Pattern>,
    /// Local or remote port.
    pub port: Option<u16>,
}

impl Default for SocketFilter {
    fn default() -> Self {
        SocketFilter {
            states: StateSet::default_stuck(),
            netns: NetnsSelector::All,
            older_than: None,
            process: None,
            unit: None,
            port: None,
        }
    }
}

impl SocketFilter {
    /// Whether the filter needs owners to decide.
    pub fn needs_owners(&self) -> bool {
        self.process.is_some() || self.unit.is_some()
    }

    /// Selectors that need only the kernel's view (cheap: applied before the /proc walk).
    pub fn matches_kernel_view(&self, s: &StuckSocket) -> bool {
        let port_ok = self.port.map_or(true, |p| {
            s.socket.local.port() == p || s.socket.remote.port() == p
        });
        let age_ok = self
            .older_than
            .map_or(true, |min| s.age.secs >= min.as_secs());
        port_ok && age_ok && self.states.contains(s.socket.state)
    }

    /// Selectors on owners: a socket matches when any owner does; ownerless sockets never
    /// match an owner selector.
    pub fn matches_owners(&self, s: &StuckSocket) -> bool {
        let process_ok = self.process.as_ref().map_or(true, |p| {
            s.owners.iter().any(|o| p.matches(&o.process.comm))
        });
        let unit_ok = self.unit.as_ref().map_or(true, |u| {
            s.owners
                .iter()
                .any(|o| o.process.unit.as_deref().is_some_and(|n| u.matches(n)))
        });
        process_ok && unit_ok
    }
}
