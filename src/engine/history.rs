//! What the engine remembers between passes: past actions (from the audit log), used for
//! cooldowns, budgets and escalation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::PlanItem;
use crate::model::{Cookie, ProcessId};
use crate::policy::{ActionKind, PolicySet};

/// The engine's memory of past actions, indexed by the questions it asks: how many of a
/// kind lately (rate budgets, per second), how many restarts of a unit (per hour), when a
/// rule last acted on a target (cooldowns), what a rule did to an owner (escalation), and
/// which would-be actions were recorded already (observe mode). Only what a [`Keep`] asks
/// for is kept, so its size follows the windows of the policies in force, not the length of
/// the trail.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Counted actions per kind and second since the epoch.
    per_second: BTreeMap<(ActionKind, u64), u32>,
    /// Counted restarts per unit.
    restarts: HashMap<String, Vec<SystemTime>>,
    /// The latest counted action of each rule on each target.
    latest: HashMap<Arc<str>, HashMap<TargetKey, SystemTime>>,
    /// Counted actions of each rule on each owner: (time, escalated, action).
    steps: HashMap<Arc<str>, HashMap<OwnerKey, Vec<Step>>>,
    /// Rule and target of observed and dry-run records.
    recorded: HashMap<Arc<str>, HashSet<TargetKey>>,
    keep: Keep,
}

/// One counted action of a rule on an owner: when, whether it was the escalation step, what.
pub type Step = (SystemTime, bool, ActionKind);

/// What a [`History`] keeps of each past action, from the policies that will ask.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// `None`: everything (tests, and a history built without policies).
    only: Option<KeepOnly>,
}

#[derive(Debug, Clone)]
struct KeepOnly {
    /// Rules with a cooldown: their latest action per target.
    cooldown_rules: HashSet<String>,
    /// Rules with an escalation: their steps per owner.
    escalating_rules: HashSet<String>,
    /// Whether observed/dry-run records are remembered (the daemon in observe mode).
    recorded: bool,
    /// Whether counted actions are kept for the rate and restart budgets (not when they
    /// are lifted: `clean --lift-budgets`).
    budgets: bool,
}

impl Keep {
    /// Keep everything.
    pub fn all() -> Keep {
        Keep { only: None }
    }

    /// Keep what these policies ask about; `recorded`: remember observed records too.
    pub fn for_policies(policies: &PolicySet, recorded: bool) -> Keep {
        Keep {
            only: Some(KeepOnly {
                cooldown_rules: policies
                    .rules
                    .iter()
                    .filter(|r| r.cooldown.is_some())
                    .map(|r| r.name.clone())
                    .collect(),
                escalating_rules: policies
                    .rules
                    .iter()
                    .filter(|r| r.escalate.is_some())
                    .map(|r| r.name.clone())
                    .collect(),
                recorded,
                budgets: true,
            }),
        }
    }

    /// The same, without what only the budgets need when they are lifted.
    pub fn budgets_lifted(mut self, lifted: bool) -> Keep {
        if let Some(only) = &mut self.only {
            only.budgets = !lifted;
        }
        self
    }

    /// Nothing of the trail is asked about (budgets lifted; no cooldown, no escalation, no
    /// observe mode): it need not be read at all.
    pub fn nothing(&self) -> bool {
        self.only.as_ref().is_some_and(|k| {
            !k.budgets
                && !k.recorded
                && k.cooldown_rules.is_empty()
                && k.escalating_rules.is_empty()
        })
    }
}

impl History {
    /// A history of these actions, everything kept.
    pub fn new(actions: Vec<PastAction>) -> History {
        let mut h = History::keeping(Keep::all());
        for a in actions {
            h.add(a);
        }
        h
    }

    /// An empty history that keeps what `keep` says.
    pub fn keeping(keep: Keep) -> History {
        History {
            keep,
            ..History::default()
        }
    }

    /// Remember one past action (what of it counts, and for what, is decided here).
    pub fn add(&mut self, a: PastAction) {
        let only = self.keep.only.as_ref();
        if matches!(a.outcome, PastOutcome::DryRun | PastOutcome::Observed) {
            if only.map_or(true, |k| k.recorded) {
                self.recorded.entry(a.rule).or_default().insert(a.target);
            }
            return;
        }
        if !a.outcome.counts() {
            return;
        }
        let secs = a
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if only.map_or(true, |k| k.budgets) {
            *self.per_second.entry((a.action, secs)).or_default() += 1;
            if let (ActionKind::Restart, TargetKey::Unit(unit)) = (a.action, &a.target) {
                self.restarts.entry(unit.clone()).or_default().push(a.time);
            }
        }
        let rule = a.rule.as_ref();
        if only.map_or(true, |k| k.escalating_rules.contains(rule)) {
            if let Some(owner) = a.owner.clone() {
                self.steps
                    .entry(Arc::clone(&a.rule))
                    .or_default()
                    .entry(owner)
                    .or_default()
                    .push((a.time, a.escalated, a.action));
            }
        }
        if only.map_or(true, |k| k.cooldown_rules.contains(rule)) {
            let slot = self
                .latest
                .entry(a.rule)
                .or_default()
                .entry(a.target)
                .or_insert(a.time);
            if a.time > *slot {
                *slot = a.time;
            }
        }
    }

    /// What this history keeps.
    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    /// Whether the steps of `rule` are kept (it escalates): only then is who an action was
    /// about asked.
    pub fn keeps_steps_of(&self, rule: &str) -> bool {
        self.keep
            .only
            .as_ref()
            .map_or(true, |k| k.escalating_rules.contains(rule))
    }

    /// Counted actions of `kind` less than `window` seconds before `now` (one in the
    /// future counts as just now).
    pub(crate) fn count(&self, kind: ActionKind, now: SystemTime, window: u64) -> u32 {
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let from = now_secs.saturating_sub(window.saturating_sub(1));
        let n: u64 = self
            .per_second
            .range((kind, from)..=(kind, u64::MAX))
            .map(|(_, n)| u64::from(*n))
            .sum();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Counted restarts of `unit` less than `window` seconds before `now`.
    pub(crate) fn restarts(&self, unit: &str, now: SystemTime, window: u64) -> u32 {
        let n = self.restarts.get(unit).map_or(0, |ts| {
            ts.iter().filter(|t| secs_since(now, **t) < window).count()
        });
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// When `rule` last acted on `target` (a rule with a cooldown).
    pub(crate) fn latest(&self, rule: &str, target: &TargetKey) -> Option<SystemTime> {
        self.latest.get(rule)?.get(target).copied()
    }

    /// What `rule` did to `owner`: each counted action.
    pub(crate) fn steps(&self, rule: &str, owner: &OwnerKey) -> &[Step] {
        self.steps
            .get(rule)
            .and_then(|by_owner| by_owner.get(owner))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether an observed or dry-run record of `rule` on `target` is in the trail.
    pub fn recorded(&self, rule: &str, target: &TargetKey) -> bool {
        self.recorded
            .get(rule)
            .is_some_and(|targets| targets.contains(target))
    }

    /// How many past actions this history holds, for tests of its size.
    pub fn len(&self) -> usize {
        self.per_second.len()
            + self.restarts.values().map(Vec::len).sum::<usize>()
            + self.latest.values().map(HashMap::len).sum::<usize>()
            + self
                .steps
                .values()
                .flat_map(HashMap::values)
                .map(Vec::len)
                .sum::<usize>()
            + self.recorded.values().map(HashSet::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn secs_since(now: SystemTime, then: SystemTime) -> u64 {
    now.duration_since(then).map_or(0, |d| d.as_secs())
}

/// One action taken (or attempted, or only planned) in an earlier pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastAction {
    pub time: SystemTime,
    pub rule: Arc<str>,
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
            rule: Arc::from(&*item.rule),
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
