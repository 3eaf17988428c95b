//! The serialized view of a stuck socket: one line of `scan --json`, and the target of an
//! audit record. One struct so that both stay the same.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{AgeSource, Family, Netns, StuckSocket, TcpState};

/// One socket, as scripts and the audit log see it. Field names are a stable interface:
/// add fields, never rename or remove them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRecord {
    /// The namespace's inode number (as `stat -L /proc/<pid>/ns/net` gives it).
    pub netns_inode: u64,
    /// Readable namespace name: `host`, a `/run/netns` name, or `pid:<PID>(<comm>)`.
    pub netns: String,
    pub family: Family,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub recv_q: u32,
    pub send_q: u32,
    pub cookie: u64,
    /// sockfs inode; 0 for orphans and minisockets (no process can hold them).
    pub inode: u64,
    pub uid: u32,
    pub age_secs: u64,
    pub age_source: AgeSource,
    /// True when the socket may be older than `age_secs`.
    pub age_is_lower_bound: bool,
    /// Every process holding the socket; empty when ownerless.
    pub owners: Vec<OwnerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub pid: i32,
    /// Clock ticks since boot (`/proc/<pid>/stat` field 22): with `pid`, the process identity.
    pub start_time: u64,
    pub fd: i32,
    pub comm: String,
    pub cmdline: String,
    pub uid: u32,
    pub unit: Option<String>,
    pub container: Option<String>,
}

impl SocketRecord {
    pub fn new(stuck: &StuckSocket, netns: &Netns) -> SocketRecord {
        let s = &stuck.socket;
        SocketRecord {
            netns_inode: s.netns.inode,
            netns: netns.name.clone(),
            family: s.family,
            state: s.state,
            local: s.local,
            remote: s.remote,
            recv_q: s.recv_q,
            send_q: s.send_q,
            cookie: s.cookie.0,
            inode: s.inode.0,
            uid: s.uid,
            age_secs: stuck.age.secs,
            age_source: stuck.age.source,
            age_is_lower_bound: stuck.age.lower_bound,
            owners: stuck
                .owners
                .iter()
                .map(|o| OwnerRecord {
                    pid: o.process.id.pid.0,
                    start_time: o.process.id.start_time,
                    fd: o.fd,
                    comm: o.process.comm.clone(),
                    cmdline: o.process.cmdline.clone(),
                    uid: o.process.uid,
                    unit: o.process.unit.clone(),
                    container: o.process.container.clone(),
                })
                .collect(),
        }
    }
}

/// What an action is aimed at, as every JSON line names it: the plan's items, the results
/// of `clean` and the daemon's reports carry the same object, so a script joins them on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetRef {
    /// A socket: its namespace and cookie (the cookie the kernel and `scan --json` give).
    Socket { netns_inode: u64, cookie: u64 },
    /// A process: pid and start time are its identity; comm as read from it.
    Process {
        pid: i32,
        start_time: u64,
        comm: String,
    },
    /// A systemd unit.
    Unit { unit: String },
}
