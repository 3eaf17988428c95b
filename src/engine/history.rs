//! What the engine remembers between passes: past actions (from the audit log), used for
//! cooldowns, budgets and escalation.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::PlanItem;
use crate::model::{Cookie, ProcessId};
use crate::policy::ActionKind;

/// Past actions, in any order. Built from the audit log by its reader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub actions: Vec<PastAction>,
}

impl History {
    pub fn new(actions: Vec<PastAction>) -> History {
        History { actions }
    }

    /// Actions that happened (or may have) and so count for cooldowns, budgets and
    /// escalation.
    pub(crate) fn counted(&self) -> impl Iterator<Item = &PastAction> {
        self.actions.iter().filter(|a| a.outcome.counts())
    }
}

/// One action taken (or attempted, or only planned) in an earlier pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAction {
    pub time: SystemTime,
    pub rule: String,
    pub action: ActionKind,
    /// True when this was the rule's `[rule.escalate]` step.
    pub escalated: bool,
    pub target: TargetKey,
    /// The owner the action was about (unit, else process); what escalation follows.
    pub owner: Option<OwnerKey>,
    pub outcome: PastOutcome,
}

impl PastAction {
    /// The history entry for a plan item acted on at `time`.
    pub fn from_item(item: &PlanItem, time: SystemTime, outcome: PastOutcome) -> PastAction {
        PastAction {
            time,
            rule: item.rule.clone(),
            action: item.action.kind(),
            escalated: item.escalated,
            target: item.target.key(),
            owner: item.owner.clone(),
            outcome,
        }
    }
}

/// What an action was aimed at: cooldowns are per (rule, target).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum TargetKey {
    Socket(Cookie),
    Process(ProcessId),
    Unit(String),
}

/// Who a socket belongs to for escalation: its owner's systemd unit, else the process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum OwnerKey {
    Unit(String),
    Process(ProcessId),
}

impl std::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnerKey::Unit(u) => f.write_str(u),
            OwnerKey::Process(p) => write!(f, "pid {}", p.pid),
        }
    }
}

/// How a past action ended, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PastOutcome {
    /// The kernel or systemd confirmed it.
    Done,
    /// Attempted and failed (it still counts: the target was hit or nearly so).
    Failed,
    /// An intent record without an outcome (crash mid-action): assume it happened.
    Unknown,
    /// Only planned (`clean --dry-run`): does not count.
    DryRun,
    /// Planned in observe mode: does not count.
    Observed,
    /// Held back by a guard: does not count.
    Held,
}

impl PastOutcome {
    pub fn counts(self) -> bool {
        matches!(
            self,
            PastOutcome::Done | PastOutcome::Failed | PastOutcome::Unknown
        )
    }
}
