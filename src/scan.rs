//! The watcher: one pass over every selected namespace's sock_diag dump, attributed to
//! owners (only when there are candidates) and aged. Pure over [`System`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::age::{self, AgeContext};
use crate::filter::{NetnsSelector, SocketFilter};
use crate::model::{Cookie, Inode, Netns, NetnsId, StuckSocket, TcpState};
use crate::sys::{OwnerScan, SysError, System};

/// Everything one scan saw.
#[derive(Debug)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    /// The namespaces that were dumped.
    pub namespaces: Vec<Netns>,
    /// Matching sockets, sorted oldest first.
    pub sockets: Vec<StuckSocket>,
    /// Things the user should know: namespaces or processes that could not be inspected.
    pub warnings: Vec<String>,
    /// Whether owners were looked up at all (false when nothing needed attributing).
    pub owners_scanned: bool,
    /// Processes whose fds could not be read (their sockets' owners may be missing).
    pub unreadable_processes: usize,
}

impl Snapshot {
    pub fn netns(&self, id: NetnsId) -> Option<&Netns> {
        self.namespaces.iter().find(|n| n.id == id)
    }

    /// Readable name of a namespace, or its inode when unknown.
    pub fn netns_name(&self, id: NetnsId) -> String {
        self.netns(id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no network namespace matches `--netns {0}`; run `sockwarden scan --netns all` to list them, or `ip netns list`")]
    NoSuchNetns(String),
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// How long the agent has watched each socket, for ages by observation (the daemon fills
/// this; a one-shot scan has none).
pub type Observations = HashMap<(Cookie, TcpState), SystemTime>;

/// Scan the selected namespaces for sockets matching `filter`.
pub fn scan(
    sys: &dyn System,
    filter: &SocketFilter,
    observations: &Observations,
    now: SystemTime,
) -> Result<Snapshot, ScanError> {
    let list = sys.namespaces()?;
    let mut warnings = list.warnings;
    let namespaces = select_namespaces(sys, list.namespaces, &filter.netns)?;
    let only_one = namespaces.len() == 1;
    let uptime = sys.uptime();

    let mut sockets = Vec::new();
    let mut dumped = Vec::with_capacity(namespaces.len());
    for netns in namespaces {
        match sys.dump(&netns, filter.states) {
            Ok(dump) => {
                for socket in dump.sockets {
                    let ctx = AgeContext {
                        tcp_fin_timeout: dump.tcp_fin_timeout,
                        uptime,
                        observed: observations
                            .get(&(socket.cookie, socket.state))
                            .and_then(|first| now.duration_since(*first).ok()),
                    };
                    let age = age::estimate(&socket, &ctx);
                    let stuck = StuckSocket {
                        socket,
                        owners: Vec::new(),
                        age,
                    };
                    if filter.matches_kernel_view(&stuck) {
                        sockets.push(stuck);
                    }
                }
                dumped.push(netns);
            }
            // The one namespace asked for failing is an error; one of many failing (it
            // vanished, or we may not enter it) is a warning and the scan goes on.
            Err(e) if only_one => return Err(e.into()),
            Err(e) => warnings.push(format!("namespace {}: {e}", netns.name)),
        }
    }

    let wanted: HashSet<Inode> = sockets
        .iter()
        .map(|s| s.socket.inode)
        .filter(|i| i.0 != 0)
        .collect();
    let owners_scanned = !wanted.is_empty();
    let mut unreadable_processes = 0;
    if owners_scanned {
        let OwnerScan {
            mut owners,
            unreadable,
            ..
        } = sys.owners(&wanted);
        unreadable_processes = unreadable.len();
        if !unreadable.is_empty() {
            warnings.push(unreadable_warning(&unreadable));
        }
        for s in &mut sockets {
            if let Some(found) = owners.remove(&s.socket.inode) {
                s.owners = found;
            }
        }
    }
    if filter.needs_owners() {
        sockets.retain(|s| filter.matches_owners(s));
    }
    sockets.sort_by(|a, b| {
        b.age
            .secs
            .cmp(&a.age.secs)
            .then(a.socket.cookie.cmp(&b.socket.cookie))
    });

    Ok(Snapshot {
        taken_at: now,
        namespaces: dumped,
        sockets,
        warnings,
        owners_scanned,
        unreadable_processes,
    })
}

fn select_namespaces(
    sys: &dyn System,
    all: Vec<Netns>,
    selector: &NetnsSelector,
) -> Result<Vec<Netns>, ScanError> {
    let picked: Vec<Netns> = match selector {
        NetnsSelector::All => all,
        // The namespace sockwarden runs in is listed first and named `host`.
        NetnsSelector::Host => all.into_iter().take(1).collect(),
        NetnsSelector::Named(name) => all
            .into_iter()
            .filter(|n| &n.name == name || n.id.inode.to_string() == *name)
            .collect(),
        NetnsSelector::Path(path) => {
            let wanted = sys.namespace_at(path)?;
            let known = all.into_iter().find(|n| n.id == wanted.id);
            vec![known.unwrap_or(wanted)]
        }
    };
    if picked.is_empty() {
        let text = match selector {
            NetnsSelector::Named(n) => n.clone(),
            other => format!("{other:?}"),
        };
        return Err(ScanError::NoSuchNetns(text));
    }
    Ok(picked)
}

fn unreadable_warning(unreadable: &[(crate::model::Pid, std::io::ErrorKind)]) -> String {
    let sample: Vec<String> = unreadable
        .iter()
        .take(5)
        .map(|(p, _)| p.to_string())
        .collect();
    format!(
        "could not read the open files of {} process(es) (pid {}{}): permission denied; \
         sockets they hold are shown without owners. Run as root, or grant CAP_SYS_PTRACE \
         and CAP_DAC_READ_SEARCH, to see every owner",
        unreadable.len(),
        sample.join(", "),
        if unreadable.len() > 5 { ", …" } else { "" }
    )
}

/// Turn a `Duration` since the epoch into whole seconds, for records.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
