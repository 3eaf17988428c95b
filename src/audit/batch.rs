//! Many sockets in one sealed record: a mass destroy's intents (or dry runs, or skips) are
//! one record per batch, each process named once and each socket referring to it, and
//! their outcomes one record per batch, a result per socket in the same order. Readers
//! expand a batch into one entry per socket (`entry` = its index), so `audit show`,
//! `summary` and the engine's history see the same entries as from single records; the
//! seal covers the whole batch, so a change to any socket's entry is caught.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::record::Outcome;
use crate::model::{AgeSource, Family, ProcessId, StuckSocket, TcpState};
use crate::record::{OwnerRecord, SocketRecord};

/// The body of a batch record: `processes` and `targets` in intents and dry runs,
/// `results` in outcomes.
/// Written and read as [`super::batch_wire`] says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Every process the targets name, once.
    pub processes: Vec<BatchProcess>,
    /// One socket per entry.
    pub targets: Vec<BatchTarget>,
    /// Outcomes: one per target of the intent, in its order.
    pub results: Vec<Outcome>,
}

/// A process named by the targets of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProcess {
    pub pid: i32,
    pub start_time: u64,
    pub comm: String,
    pub cmdline: String,
    pub uid: u32,
    pub unit: Option<String>,
    pub container: Option<String>,
}

/// One socket of a batch: the rule that chose it and why, and the socket as `scan --json`
/// shows it, its owners as `[process index, fd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTarget {
    pub rule: String,
    pub escalated: bool,
    pub why: String,
    pub netns_inode: u64,
    pub netns: String,
    pub family: Family,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub recv_q: u32,
    pub send_q: u32,
    pub cookie: u64,
    pub inode: u64,
    pub uid: u32,
    pub age_secs: u64,
    pub age_source: AgeSource,
    pub age_is_lower_bound: bool,
    pub owners: Vec<(usize, i32)>,
}

/// One socket to put in a batch: the socket as the snapshot has it, borrowed (its owners'
/// command lines are copied once per process into the batch, not once per socket).
pub struct Entry<'a> {
    pub rule: &'a str,
    pub escalated: bool,
    pub why: String,
    /// The name of the socket's namespace.
    pub netns: std::borrow::Cow<'a, str>,
    pub socket: &'a StuckSocket,
}

impl Batch {
    /// The batch of these entries, each owner process listed once.
    pub fn of<'a>(entries: impl IntoIterator<Item = Entry<'a>>) -> Batch {
        let mut batch = Batch::default();
        let mut index: HashMap<ProcessId, usize> = HashMap::new();
        for e in entries {
            let s = &e.socket.socket;
            let owners = e
                .socket
                .owners
                .iter()
                .map(|o| {
                    let p = &o.process;
                    let i = *index.entry(p.id).or_insert_with(|| {
                        batch.processes.push(BatchProcess {
                            pid: p.id.pid.0,
                            start_time: p.id.start_time,
                            comm: p.comm.clone(),
                            cmdline: p.cmdline.clone(),
                            uid: p.uid,
                            unit: p.unit.clone(),
                            container: p.container.clone(),
                        });
                        batch.processes.len() - 1
                    });
                    (i, o.fd)
                })
                .collect();
            let age = &e.socket.age;
            batch.targets.push(BatchTarget {
                rule: e.rule.to_string(),
                escalated: e.escalated,
                why: e.why,
                netns_inode: s.netns.inode,
                netns: e.netns.into_owned(),
                family: s.family,
                state: s.state,
                local: s.local,
                remote: s.remote,
                recv_q: s.recv_q,
                send_q: s.send_q,
                cookie: s.cookie.0,
                inode: s.inode.0,
                uid: s.uid,
                age_secs: age.secs,
                age_source: age.source,
                age_is_lower_bound: age.lower_bound,
                owners,
            });
        }
        batch
    }

    /// An outcome batch: the results, in the order of the intent's targets.
    pub fn results(results: Vec<Outcome>) -> Batch {
        Batch {
            results,
            ..Batch::default()
        }
    }

    /// Target `i` as one line of `scan --json` (its owners filled in).
    pub fn socket(&self, i: usize) -> Option<SocketRecord> {
        let t = self.targets.get(i)?;
        let owners = t
            .owners
            .iter()
            .filter_map(|&(p, fd)| {
                let p = self.processes.get(p)?;
                Some(OwnerRecord {
                    pid: p.pid,
                    start_time: p.start_time,
                    fd,
                    comm: p.comm.clone(),
                    cmdline: p.cmdline.clone(),
                    uid: p.uid,
                    unit: p.unit.clone(),
                    container: p.container.clone(),
                })
            })
            .collect();
        Some(SocketRecord {
            netns_inode: t.netns_inode,
            netns: t.netns.clone(),
            family: t.family,
            state: t.state,
            local: t.local,
            remote: t.remote,
            recv_q: t.recv_q,
            send_q: t.send_q,
            cookie: t.cookie,
            inode: t.inode,
            uid: t.uid,
            age_secs: t.age_secs,
            age_source: t.age_source,
            age_is_lower_bound: t.age_is_lower_bound,
            owners,
        })
    }
}
