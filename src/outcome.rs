//! What came of an action: one closed set of results, each with its meaning in one place —
//! whether it did what was meant, and how the engine weighs it for cooldowns, budgets and
//! escalation. Stored in the audit log by name (kebab-case); the names never change.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::PastOutcome;

/// The result of one planned item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionResult {
    /// destroy: ACKed by the kernel and gone from a re-dump.
    Destroyed,
    /// destroy: the socket was gone already (ENOENT), or gone at the act-time re-check.
    AlreadyGone,
    /// destroy: the tuple belongs to another socket now (nothing touched).
    TupleReused,
    /// destroy: no SOCK_DESTROY here (EOPNOTSUPP); signal: no pidfd.
    Unsupported,
    /// EPERM: a capability is missing.
    NotPermitted,
    /// destroy: ACKed, but a re-dump still lists the socket.
    NotConfirmed,
    /// signal: the kernel accepted it for that very process.
    Delivered,
    /// signal: the planned process has exited (its pid may be another's now).
    Exited,
    /// signal: the pid belongs to another process (start time differs).
    PidReused,
    /// signal: the process lives on but no longer holds the socket.
    NoLongerHeld,
    /// restart: the unit got a new main process.
    Restarted,
    /// restart: the unit was already changing state; left alone.
    AlreadyInProgress,
    /// exec: the command exited 0.
    Exited0,
    /// The action was attempted and did not work.
    Failed,
    /// The act-time decision did not confirm it (or it could not act on this target).
    Skipped,
    /// log: recorded, nothing touched.
    Logged,
    /// `--dry-run`: planned and recorded only.
    DryRun,
    /// observe mode: planned and recorded only.
    Observed,
    /// A result this version does not know (written by another version): kept as written.
    Other(String),
}

/// Every known result, for names and tests.
pub const ALL: [ActionResult; 18] = [
    ActionResult::Destroyed,
    ActionResult::AlreadyGone,
    ActionResult::TupleReused,
    ActionResult::Unsupported,
    ActionResult::NotPermitted,
    ActionResult::NotConfirmed,
    ActionResult::Delivered,
    ActionResult::Exited,
    ActionResult::PidReused,
    ActionResult::NoLongerHeld,
    ActionResult::Restarted,
    ActionResult::AlreadyInProgress,
    ActionResult::Exited0,
    ActionResult::Failed,
    ActionResult::Skipped,
    ActionResult::Logged,
    ActionResult::DryRun,
    ActionResult::Observed,
];

impl ActionResult {
    /// The name in the audit log, reports and metrics.
    pub fn name(&self) -> &str {
        match self {
            ActionResult::Destroyed => "destroyed",
            ActionResult::AlreadyGone => "already-gone",
            ActionResult::TupleReused => "tuple-reused",
            ActionResult::Unsupported => "unsupported",
            ActionResult::NotPermitted => "not-permitted",
            ActionResult::NotConfirmed => "not-confirmed",
            ActionResult::Delivered => "delivered",
            ActionResult::Exited => "exited",
            ActionResult::PidReused => "pid-reused",
            ActionResult::NoLongerHeld => "no-longer-held",
            ActionResult::Restarted => "restarted",
            ActionResult::AlreadyInProgress => "already-in-progress",
            ActionResult::Exited0 => "exited-0",
            ActionResult::Failed => "failed",
            ActionResult::Skipped => "skipped",
            ActionResult::Logged => "logged",
            ActionResult::DryRun => "dry-run",
            ActionResult::Observed => "observed",
            ActionResult::Other(name) => name,
        }
    }

    /// The result of that name (an unknown name is kept as [`ActionResult::Other`]).
    pub fn from_name(name: &str) -> ActionResult {
        ALL.iter()
            .find(|r| r.name() == name)
            .cloned()
            .unwrap_or_else(|| ActionResult::Other(name.to_string()))
    }

    /// Whether the action did what it was meant to, or there was nothing left to do.
    pub fn succeeded(&self) -> bool {
        matches!(
            self,
            ActionResult::Destroyed
                | ActionResult::AlreadyGone
                | ActionResult::Delivered
                | ActionResult::Exited
                | ActionResult::Restarted
                | ActionResult::Exited0
                | ActionResult::Logged
                | ActionResult::DryRun
                | ActionResult::Observed
        )
    }

    /// Planned and recorded only (observe mode, dry run): nothing was attempted.
    pub fn only_recorded(&self) -> bool {
        matches!(self, ActionResult::DryRun | ActionResult::Observed)
    }

    /// How the engine weighs an intent with this outcome for cooldowns, budgets and
    /// escalation.
    pub fn weight(&self) -> PastOutcome {
        match self {
            // Nothing was done to the target, so nothing to cool down from.
            ActionResult::Skipped
            | ActionResult::AlreadyGone
            | ActionResult::TupleReused
            | ActionResult::PidReused
            | ActionResult::NoLongerHeld
            | ActionResult::Exited
            | ActionResult::AlreadyInProgress => PastOutcome::Held,
            // Attempted: the target was hit, or nearly so.
            ActionResult::Failed
            | ActionResult::NotPermitted
            | ActionResult::Unsupported
            | ActionResult::NotConfirmed => PastOutcome::Failed,
            ActionResult::DryRun => PastOutcome::DryRun,
            ActionResult::Observed => PastOutcome::Observed,
            // Done, or an unknown result: count it (conservative).
            ActionResult::Destroyed
            | ActionResult::Delivered
            | ActionResult::Restarted
            | ActionResult::Exited0
            | ActionResult::Logged
            | ActionResult::Other(_) => PastOutcome::Done,
        }
    }
}

impl fmt::Display for ActionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for ActionResult {
    fn from(name: &str) -> ActionResult {
        ActionResult::from_name(name)
    }
}

impl PartialEq<&str> for ActionResult {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl Serialize for ActionResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ActionResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(ActionResult::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The on-disk names: the audit log's format does not change.
    #[test]
    fn names_round_trip_and_unknown_names_are_kept() {
        for r in ALL {
            let json = serde_json::to_string(&r).expect("serialize");
            assert_eq!(json, format!("\"{}\"", r.name()));
            assert_eq!(
                serde_json::from_str::<ActionResult>(&json).expect("parse"),
                r
            );
        }
        let future: ActionResult = serde_json::from_str("\"quarantined\"").expect("parse");
        assert_eq!(future, ActionResult::Other("quarantined".into()));
        assert_eq!(
            serde_json::to_string(&future).expect("json"),
            "\"quarantined\""
        );
        assert_eq!(future.weight(), PastOutcome::Done, "unknown counts");
    }

    #[test]
    fn what_the_engine_makes_of_each_result() {
        for (r, weight, ok) in [
            (ActionResult::Destroyed, PastOutcome::Done, true),
            (ActionResult::Skipped, PastOutcome::Held, false),
            (ActionResult::NoLongerHeld, PastOutcome::Held, false),
            (ActionResult::Exited, PastOutcome::Held, true),
            (ActionResult::Failed, PastOutcome::Failed, false),
            (ActionResult::NotConfirmed, PastOutcome::Failed, false),
            (ActionResult::Observed, PastOutcome::Observed, true),
        ] {
            assert_eq!(r.weight(), weight, "{r}");
            assert_eq!(r.succeeded(), ok, "{r}");
        }
    }
}
