//! One decision, made twice: a [`Decider`] scans and plans at plan time, and the actions
//! ask it again at act time, on freshly read facts (is the socket there, who holds it now,
//! do the guards still allow it), before touching anything.

use std::time::SystemTime;

use crate::engine::{self, EngineInput, History, Plan, RunOptions};
use crate::filter::SocketFilter;
use crate::model::Netns;
use crate::policy::PolicySet;
use crate::scan::{self, Observations, ScanError, Snapshot};
use crate::sys::System;

/// Everything a plan depends on except the facts and the history: where to look, what to
/// look for, the policies and the run's options.
pub struct Decider<'a> {
    pub sys: &'a dyn System,
    /// The namespaces to scan (listed once; a namespace created meanwhile holds nothing
    /// that was planned).
    pub namespaces: Vec<Netns>,
    pub filter: SocketFilter,
    /// First-seen times (the daemon's); empty for a one-off command.
    pub observations: &'a Observations,
    pub policies: &'a PolicySet,
    pub options: RunOptions,
}

/// A snapshot and the plan made from it.
#[derive(Debug)]
pub struct Planned {
    pub snap: Snapshot,
    pub plan: Plan,
}

impl Decider<'_> {
    /// Read the facts: one scan of the namespaces.
    pub fn scan(&self, now: SystemTime) -> Result<Snapshot, ScanError> {
        scan::scan_in(
            self.sys,
            &self.namespaces,
            &self.filter,
            self.observations,
            now,
        )
    }

    /// The plan for `snap` under the policies, `history` and the clock.
    pub fn plan(&self, snap: &Snapshot, history: &History, now: SystemTime) -> Plan {
        let names = snap.netns_names();
        engine::plan(&EngineInput {
            sockets: &snap.sockets,
            netns_names: &names,
            policies: self.policies,
            history,
            now,
            options: self.options,
        })
    }

    /// Scan, then plan.
    pub fn decide(&self, history: &History, now: SystemTime) -> Result<Planned, ScanError> {
        let snap = self.scan(now)?;
        let plan = self.plan(&snap, history, now);
        Ok(Planned { snap, plan })
    }
}
