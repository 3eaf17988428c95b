//! The engine's memory: past actions read back from the audit trail, for cooldowns,
//! budgets and escalation.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::audit::{self, AuditError, AuditRecord, RecordKind};
use crate::engine::{History, OwnerKey, PastAction, PastOutcome, TargetKey};
use crate::model::{Cookie, Pid, ProcessId};
use crate::policy::ActionKind;

/// How far back the engine looks: the longest budget window (restarts per unit per hour)
/// plus room for cooldowns and escalation windows.
pub const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Past actions from the trail at `path` (a missing trail is an empty history).
pub fn load(path: &Path, now: SystemTime) -> Result<History, AuditError> {
    let trail = match audit::read_trail(path) {
        Ok(trail) => trail,
        Err(AuditError::NotFound { .. }) => return Ok(History::default()),
        Err(e) => return Err(e),
    };
    let since = now.checked_sub(LOOKBACK).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(from_records(&trail.records, since))
}

pub fn from_records(records: &[AuditRecord], since: SystemTime) -> History {
    let results = audit::outcome_results(records);
    let actions = records
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Intent | RecordKind::DryRun))
        .filter_map(|r| {
            let time = r.timestamp().filter(|t| *t >= since)?;
            let action = r.action.as_ref()?;
            let outcome = match (r.kind, results.get(&r.seq).copied()) {
                (RecordKind::DryRun, _) => PastOutcome::DryRun,
                (_, None) => PastOutcome::Unknown,
                (_, Some("skipped" | "already-gone" | "tuple-reused" | "pid-reused" | "exited")) => PastOutcome::Held,
                (_, Some("failed" | "not-permitted" | "unsupported" | "not-confirmed")) => PastOutcome::Failed,
                (_, Some(_)) => PastOutcome::Done,
            };
            Some(PastAction {
                time,
                rule: r.rule.clone()?,
                action: action_kind(action.kind),
                escalated: false, // TODO(audit escalated field)
                target: target_key(r)?,
                owner: owner_key(r),
                outcome,
            })
        })
        .collect();
    History::new(actions)
}

fn action_kind(kind: audit::ActionKind) -> ActionKind {
    match kind {
        audit::ActionKind::Log => ActionKind::Log,
        audit::ActionKind::Destroy => ActionKind::Destroy,
        audit::ActionKind::Signal => ActionKind::Signal,
        audit::ActionKind::Restart => ActionKind::Restart,
        audit::ActionKind::Exec => ActionKind::Exec,
    }
}

/// What the action was aimed at: a unit (restart), a process (signal), else the socket.
fn target_key(r: &AuditRecord) -> Option<TargetKey> {
    if let Some(unit) = r.action.as_ref().and_then(|a| a.unit.clone()).or_else(|| r.unit.clone()) {
        return Some(TargetKey::Unit(unit));
    }
    if let Some(p) = &r.process {
        return Some(TargetKey::Process(ProcessId { pid: Pid(p.pid), start_time: p.start_time }));
    }
    r.target.as_ref().map(|t| TargetKey::Socket(Cookie(t.cookie)))
}

/// Who the action was about, as escalation follows it: the unit, else the process.
fn owner_key(r: &AuditRecord) -> Option<OwnerKey> {
    if let Some(unit) = r.units().first() {
        return Some(OwnerKey::Unit((*unit).to_string()));
    }
    if let Some(p) = &r.process {
        return Some(OwnerKey::Process(ProcessId { pid: Pid(p.pid), start_time: p.start_time }));
    }
    let owner = r.target.as_ref()?.owners.first()?;
    Some(OwnerKey::Process(ProcessId { pid: Pid(owner.pid), start_time: owner.start_time }))
}
