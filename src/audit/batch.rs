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
use crate::model::{AgeSource, Family, TcpState};
use crate::record::{OwnerRecord, SocketRecord};

/// The body of a batch record: `processes` and `targets` in intents and dry runs,
/// `results` in outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Every process the targets name, once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<BatchProcess>,
    /// One socket per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BatchTarget>,
    /// Outcomes: one per target of the intent, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTarget {
    pub rule: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
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

/// One socket to put in a batch.
pub struct Entry {
    pub rule: String,
    pub escalated: bool,
    pub why: String,
    pub socket: SocketRecord,
}

impl Batch {
    /// The batch of these entries, each owner process listed once.
    pub fn of(entries: Vec<Entry>) -> Batch {
        let mut batch = Batch::default();
        let mut index: HashMap<(i32, u64), usize> = HashMap::new();
        for e in entries {
            let s = e.socket;
            let owners = s
                .owners
                .into_iter()
                .map(|o| {
                    let i = *index.entry((o.pid, o.start_time)).or_insert_with(|| {
                        batch.processes.push(BatchProcess {
                            pid: o.pid,
                            start_time: o.start_time,
                            comm: o.comm,
                            cmdline: o.cmdline,
                            uid: o.uid,
                            unit: o.unit,
                            container: o.container,
                        });
                        batch.processes.len() - 1
                    });
                    (i, o.fd)
                })
                .collect();
            batch.targets.push(BatchTarget {
                rule: e.rule,
                escalated: e.escalated,
                why: e.why,
                netns_inode: s.netns_inode,
                netns: s.netns,
                family: s.family,
                state: s.state,
                local: s.local,
                remote: s.remote,
                recv_q: s.recv_q,
                send_q: s.send_q,
                cookie: s.cookie,
                inode: s.inode,
                uid: s.uid,
                age_secs: s.age_secs,
                age_source: s.age_source,
                age_is_lower_bound: s.age_is_lower_bound,
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
