//! The engine's memory read back from the trail: each intent or dry-run record, paired with
//! its outcome, becomes one [`engine::PastAction`] for cooldowns, budgets and escalation.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::error::AuditError;
use super::query::outcome_results;
use super::read::{read_files, trail_files};
use super::record::{AuditRecord, RecordKind};
use crate::engine::{History, OwnerKey, PastAction, PastOutcome, TargetKey};
use crate::model::{Cookie, Pid, ProcessId};
use crate::outcome::ActionResult;

/// How far back the engine looks: the longest budget window (restarts per unit per hour)
/// plus room for cooldowns and escalation windows. Callers pass `now - HISTORY_LOOKBACK`.
pub const HISTORY_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Past actions in the trail at `path` at or after `since`, reading only the files that can
/// hold them (newest first, stopping at a file that starts before `since`). A missing trail
/// is an empty history.
pub fn history(path: &Path, since: SystemTime) -> Result<History, AuditError> {
    let files = match trail_files(path) {
        Ok(f) => f,
        Err(AuditError::NotFound { .. }) => return Ok(History::default()),
        Err(e) => return Err(e),
    };
    // Newest file first; an outcome may sit in the file after its intent, so the kept
    // files are joined before pairing.
    let mut kept: Vec<Vec<AuditRecord>> = Vec::new();
    for file in files.into_iter().rev() {
        let records = read_files(vec![file])?.records;
        let starts_before = records
            .first()
            .and_then(|r| r.timestamp())
            .is_some_and(|t| t < since);
        kept.push(records);
        if starts_before {
            break;
        }
    }
    let records: Vec<AuditRecord> = kept.into_iter().rev().flatten().collect();
    Ok(history_from(&records, since))
}

/// [`history`] over records already read. Intents and dry runs at or after `since` that
/// name a rule, an action and a target count; notes and outcomes only inform them.
pub fn history_from(records: &[AuditRecord], since: SystemTime) -> History {
    let results = outcome_results(records);
    let actions = records
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Intent | RecordKind::DryRun))
        .filter_map(|r| {
            let time = r.timestamp().filter(|t| *t >= since)?;
            let outcome = match r.kind {
                RecordKind::DryRun => PastOutcome::DryRun,
                _ => past_outcome(results.get(&r.seq).copied()),
            };
            Some(PastAction {
                time,
                rule: r.rule.clone()?,
                action: r.action.as_ref()?.kind,
                escalated: r.escalated,
                target: target_key(r)?,
                owner: owner_key(r),
                outcome,
            })
        })
        .collect();
    History::new(actions)
}

/// An intent's outcome result as the engine weighs it (see [`ActionResult::weight`]).
pub fn past_outcome(result: Option<&str>) -> PastOutcome {
    match result {
        // No outcome: a crash mid-action or a failed outcome write; assume it happened.
        None => PastOutcome::Unknown,
        Some(name) => ActionResult::from_name(name).weight(),
    }
}

/// What the action was aimed at: a unit (restart), else a process (signal), else the socket.
fn target_key(r: &AuditRecord) -> Option<TargetKey> {
    let unit = r
        .action
        .as_ref()
        .and_then(|a| a.unit.as_ref())
        .or(r.unit.as_ref());
    if let Some(unit) = unit {
        return Some(TargetKey::Unit(unit.clone()));
    }
    if let Some(p) = &r.process {
        return Some(TargetKey::Process(process_id(p.pid, p.start_time)));
    }
    r.target
        .as_ref()
        .map(|t| TargetKey::Socket(Cookie(t.cookie)))
}

/// Who the action was about, as escalation follows it: the first unit the record names,
/// else the process target, else the socket's first owner.
fn owner_key(r: &AuditRecord) -> Option<OwnerKey> {
    if let Some(unit) = r.units().first() {
        return Some(OwnerKey::Unit((*unit).to_string()));
    }
    if let Some(p) = &r.process {
        return Some(OwnerKey::Process(process_id(p.pid, p.start_time)));
    }
    let owner = r.target.as_ref()?.owners.first()?;
    Some(OwnerKey::Process(process_id(owner.pid, owner.start_time)))
}

fn process_id(pid: i32, start_time: u64) -> ProcessId {
    ProcessId {
        pid: Pid(pid),
        start_time,
    }
}
