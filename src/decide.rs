//! One decision, made twice: a [`Decider`] scans and plans at plan time, and the actions
//! ask it again at act time, on freshly read facts (is the socket there, who holds it now,
//! do the guards still allow it), before touching anything.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;

use crate::audit;
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
    /// A one-shot command, which shows the owners of what it finds: they are read while
    /// the namespaces are dumped (a daemon reads them only when some socket is stuck).
    pub one_shot: bool,
}

/// The past actions a plan at `now` weighs (cooldowns, budgets, escalation), from the
/// trail at `audit_log`. A trail that does not exist yet is no history; one that cannot be
/// read is an error: a plan that cannot see its guards is not made.
/// Where the trail was read up to goes with it: the act-time decision reads on from there.
/// `lift_budgets`: the budgets are not weighed (`clean --lift-budgets`), so the trail is
/// read only for cooldowns and escalation, if any rule has them.
pub fn history(
    audit_log: &Path,
    now: SystemTime,
    policies: &PolicySet,
    lift_budgets: bool,
) -> anyhow::Result<audit::MarkedHistory> {
    let keep = engine::Keep::for_policies(policies, false).budgets_lifted(lift_budgets);
    audit::history_marked(audit_log, now - audit::HISTORY_LOOKBACK, keep).with_context(|| {
        format!(
            "reading the audit log {} for cooldowns and budgets",
            audit_log.display()
        )
    })
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
        let owners = if self.one_shot {
            scan::OwnerPass::Alongside
        } else {
            scan::OwnerPass::After
        };
        scan::scan_with(
            self.sys,
            &self.namespaces,
            &self.filter,
            self.observations,
            now,
            owners,
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

    /// For each socket of `snap`, every rule whose selectors match it and what came of it.
    pub fn explain(
        &self,
        snap: &Snapshot,
        history: &History,
        now: SystemTime,
    ) -> Vec<engine::SocketExplanation> {
        let names = snap.netns_names();
        engine::explain(&EngineInput {
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

    /// [`Decider::decide`] again on sockets seen a moment ago (`expected`, their inodes):
    /// their owners are read while the namespaces are dumped.
    pub fn decide_again(
        &self,
        history: &History,
        now: SystemTime,
        expected: &crate::model::InodeSet,
    ) -> Result<Planned, ScanError> {
        let snap = scan::scan_with(
            self.sys,
            &self.namespaces,
            &self.filter,
            self.observations,
            now,
            scan::OwnerPass::Expected(expected),
        )?;
        let plan = self.plan(&snap, history, now);
        Ok(Planned { snap, plan })
    }
}
