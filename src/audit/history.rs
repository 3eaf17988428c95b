//! The engine's memory read back from the trail, one record at a time: each intent or
//! dry-run entry, paired with its outcome, becomes one [`engine::PastAction`] that the
//! [`History`] keeps as far as cooldowns, budgets and escalation need it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::error::AuditError;
use super::query::AnswerKey;
use super::read::{for_each_line, trail_files};
use super::record::{AuditRecord, RecordKind};
use crate::engine::{History, Keep, OwnerKey, PastAction, PastOutcome, TargetKey};
use crate::model::{Cookie, Pid, ProcessId};
use crate::outcome::ActionResult;

/// How far back the engine looks: the longest budget window (restarts per unit per hour)
/// plus room for cooldowns and escalation windows. Callers pass `now - HISTORY_LOOKBACK`.
pub const HISTORY_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Past actions in the trail at `path` at or after `since`, reading only the files that can
/// hold them (newest first, stopping at a file that starts before `since`), one record at a
/// time: only what `keep` asks for is kept, so memory follows the policies' windows, not
/// the length of the trail. A missing trail is an empty history.
pub fn history(path: &Path, since: SystemTime, keep: Keep) -> Result<History, AuditError> {
    read_into(path, since, History::keeping(keep))
}

/// The past actions of the trail at `path` at or after `since`, one per intent or dry-run
/// entry, in trail order (what [`history`] is made of; for tests and inspection).
pub fn past_actions(path: &Path, since: SystemTime) -> Result<Vec<PastAction>, AuditError> {
    Ok(read_into(path, since, Ordered::default())?.into_actions())
}

fn read_into<S: Sink>(path: &Path, since: SystemTime, sink: S) -> Result<S, AuditError> {
    let files = match trail_files(path) {
        Ok(f) => f,
        Err(AuditError::NotFound { .. }) => return Ok(sink),
        Err(e) => return Err(e),
    };
    let mut chosen = Vec::new();
    for file in files.into_iter().rev() {
        let starts_before = first_time(&file)?.is_some_and(|t| t < since);
        chosen.push(file);
        if starts_before {
            break;
        }
    }
    chosen.reverse();
    let mut reader = Reader::new(since, sink);
    for file in &chosen {
        for_each_line(file, |_, bytes, _| {
            // Unreadable lines (a torn tail) are not history; `audit verify` reports them.
            if let Ok(record) = serde_json::from_slice::<AuditRecord>(bytes) {
                reader.add(record);
            }
            ControlFlow::Continue(())
        })?;
    }
    Ok(reader.finish())
}

/// Where the reader puts each past action once its outcome is known.
trait Sink {
    fn push(&mut self, key: AnswerKey, action: PastAction);
}

impl Sink for History {
    fn push(&mut self, _: AnswerKey, action: PastAction) {
        self.add(action);
    }
}

/// Past actions in trail order.
#[derive(Default)]
struct Ordered(Vec<(AnswerKey, PastAction)>);

impl Sink for Ordered {
    fn push(&mut self, key: AnswerKey, action: PastAction) {
        self.0.push((key, action));
    }
}

impl Ordered {
    fn into_actions(mut self) -> Vec<PastAction> {
        self.0.sort_by_key(|(key, _)| *key);
        self.0.into_iter().map(|(_, a)| a).collect()
    }
}

/// The time of the first record of `file`.
fn first_time(file: &Path) -> Result<Option<SystemTime>, AuditError> {
    let mut time = None;
    for_each_line(file, |_, bytes, _| {
        time = serde_json::from_slice::<AuditRecord>(bytes)
            .ok()
            .and_then(|r| r.timestamp());
        ControlFlow::Break(())
    })?;
    Ok(time)
}

/// [`history`] over records already read (everything kept).
pub fn history_from(records: &[AuditRecord], since: SystemTime) -> History {
    let mut reader = Reader::new(since, History::keeping(Keep::all()));
    for r in records {
        reader.add(r.clone());
    }
    reader.finish()
}

/// [`past_actions`] over records already read.
pub fn past_actions_from(records: &[AuditRecord], since: SystemTime) -> Vec<PastAction> {
    let mut reader = Reader::new(since, Ordered::default());
    for r in records {
        reader.add(r.clone());
    }
    reader.finish().into_actions()
}

/// Pairs intents with their outcomes as the records stream by.
struct Reader<S> {
    since: SystemTime,
    sink: S,
    /// Intents not answered yet (an outcome comes after its intent).
    pending: HashMap<AnswerKey, PastAction>,
    /// Rule names, each allocated once (a mass cleanup's batch names one rule 4,096 times).
    rules: HashMap<String, Arc<str>>,
}

impl<S: Sink> Reader<S> {
    fn new(since: SystemTime, sink: S) -> Reader<S> {
        Reader {
            since,
            sink,
            pending: HashMap::new(),
            rules: HashMap::new(),
        }
    }

    fn rule(&mut self, name: &str) -> Arc<str> {
        if let Some(rule) = self.rules.get(name) {
            return Arc::clone(rule);
        }
        let rule: Arc<str> = Arc::from(name);
        self.rules.insert(name.to_string(), Arc::clone(&rule));
        rule
    }

    fn add(&mut self, record: AuditRecord) {
        if record.batch.is_some() {
            return self.add_batch(record);
        }
        for r in record.entries() {
            match r.kind {
                RecordKind::Intent => {
                    if let (Some(key), Some(action)) = (r.answer_key(), self.past(&r)) {
                        self.pending.insert(key, action);
                    }
                }
                RecordKind::DryRun => {
                    if let (Some(key), Some(mut action)) = (r.answer_key(), self.past(&r)) {
                        action.outcome = PastOutcome::DryRun;
                        self.sink.push(key, action);
                    }
                }
                RecordKind::Outcome => {
                    let Some(key) = r.answer_key() else { continue };
                    if let Some(mut action) = self.pending.remove(&key) {
                        action.outcome = past_outcome(r.outcome.as_ref().map(|o| o.result.name()));
                        self.sink.push(key, action);
                    }
                }
                RecordKind::Note => {}
            }
        }
    }

    /// A batch, entry by entry, as [`AuditRecord::entries`] would give them, without making
    /// a record of each: a mass cleanup's batches hold 4,096 sockets each.
    fn add_batch(&mut self, record: AuditRecord) {
        let Some(batch) = &record.batch else {
            return;
        };
        match record.kind {
            RecordKind::Intent | RecordKind::DryRun => {
                let Some(time) = record.timestamp().filter(|t| *t >= self.since) else {
                    return;
                };
                let Some(action) = record.action.as_ref().map(|a| a.kind) else {
                    return;
                };
                for (i, t) in batch.targets.iter().enumerate() {
                    let key = (record.seq, u32::try_from(i).ok());
                    // As for a single record: the first owner's unit, else that owner.
                    let owners = t.owners.iter().filter_map(|&(p, _)| batch.processes.get(p));
                    let owner = match owners.clone().find_map(|p| p.unit.as_ref()) {
                        Some(unit) => Some(OwnerKey::Unit(unit.clone())),
                        None => owners
                            .take(1)
                            .next()
                            .map(|p| OwnerKey::Process(process_id(p.pid, p.start_time))),
                    };
                    let mut past = PastAction {
                        time,
                        rule: self.rule(&t.rule),
                        action,
                        escalated: t.escalated,
                        target: TargetKey::Socket(Cookie(t.cookie)),
                        owner,
                        outcome: PastOutcome::Unknown,
                    };
                    if record.kind == RecordKind::DryRun {
                        past.outcome = PastOutcome::DryRun;
                        self.sink.push(key, past);
                    } else {
                        self.pending.insert(key, past);
                    }
                }
            }
            RecordKind::Outcome => {
                let Some(intent) = record.intent_seq else {
                    return;
                };
                for (i, outcome) in batch.results.iter().enumerate() {
                    let key = (intent, u32::try_from(i).ok());
                    if let Some(mut action) = self.pending.remove(&key) {
                        action.outcome = past_outcome(Some(outcome.result.name()));
                        self.sink.push(key, action);
                    }
                }
            }
            RecordKind::Note => {}
        }
    }

    /// An intent or dry run at or after `since` that names a rule, an action and a target.
    fn past(&mut self, r: &AuditRecord) -> Option<PastAction> {
        let time = r.timestamp().filter(|t| *t >= self.since)?;
        Some(PastAction {
            time,
            rule: self.rule(r.rule.as_deref()?),
            action: r.action.as_ref()?.kind,
            escalated: r.escalated,
            target: target_key(r)?,
            owner: owner_key(r),
            outcome: PastOutcome::Unknown,
        })
    }

    /// Intents never answered (a crash mid-action, a failed outcome write) count as done.
    fn finish(mut self) -> S {
        for (key, action) in self.pending.drain() {
            self.sink.push(key, action);
        }
        self.sink
    }
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
