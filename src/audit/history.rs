//! The engine's memory read back from the trail, one record at a time: each intent or
//! dry-run entry, paired with its outcome, becomes one [`engine::PastAction`] that the
//! [`History`] keeps as far as cooldowns, budgets and escalation need it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::error::AuditError;
use super::query::AnswerKey;
use super::read::{for_each_line, for_each_line_from, trail_files};
use super::record::{AuditRecord, RecordKind};
use crate::engine::{History, Keep, OwnerKey, PastAction, PastOutcome, TargetKey};
use crate::model::{Cookie, Pid, ProcessId};
use crate::outcome::ActionResult;
use crate::policy::ActionKind;

/// How far back the engine looks: the longest budget window (restarts per unit per hour)
/// plus room for cooldowns and escalation windows. Callers pass `now - HISTORY_LOOKBACK`.
pub const HISTORY_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Past actions in the trail at `path` at or after `since`, reading only the files that can
/// hold them (newest first, stopping at a file that starts before `since`), one record at a
/// time: only what `keep` asks for is kept, so memory follows the policies' windows, not
/// the length of the trail. A missing trail is an empty history.
pub fn history(path: &Path, since: SystemTime, keep: Keep) -> Result<History, AuditError> {
    Ok(history_marked(path, since, keep)?.history)
}

/// Where a read of the trail stopped: the last file it read (by inode, so that a rotation
/// since does not lose it) and the end of that file's last whole line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailMark {
    inode: u64,
    offset: u64,
}

/// A history and where in the trail it was read up to (`None`: there was no trail yet).
#[derive(Debug, Clone)]
pub struct MarkedHistory {
    pub history: History,
    pub mark: Option<TrailMark>,
}

/// [`history`], and where it was read up to, for [`catch_up`].
pub fn history_marked(
    path: &Path,
    since: SystemTime,
    keep: Keep,
) -> Result<MarkedHistory, AuditError> {
    if keep.nothing() {
        // Nothing is asked about: nothing to read, now or later.
        return Ok(MarkedHistory {
            history: History::keeping(keep),
            mark: None,
        });
    }
    let (history, mark) = read_into(path, since, History::keeping(keep))?;
    Ok(MarkedHistory { history, mark })
}

/// `read` brought up to date with what was appended to the trail after its mark (another
/// writer's actions, while a plan waited for its confirmation), without reading the trail
/// again: a trail holding earlier mass cleanups is 50 MB each. An outcome appended since
/// for an intent read before is not paired: that intent already counts as done, which
/// holds back at least as much. When the marked file is gone (pruned), the trail is read
/// again whole.
pub fn catch_up(
    path: &Path,
    since: SystemTime,
    read: MarkedHistory,
) -> Result<History, AuditError> {
    if read.history.keep().nothing() {
        return Ok(read.history);
    }
    let Some(mark) = read.mark else {
        return Ok(read_into(path, since, read.history)?.0);
    };
    let files = match trail_files(path) {
        Ok(f) => f,
        Err(AuditError::NotFound { .. }) => return Ok(read.history),
        Err(e) => return Err(e),
    };
    let inode = |file: &PathBuf| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(file).ok().map(|m| m.ino())
    };
    let Some(at) = files.iter().rposition(|f| inode(f) == Some(mark.inode)) else {
        return history(path, since, read.history.keep().clone());
    };
    let mut reader = Reader::new(since, read.history);
    for (i, file) in files[at..].iter().enumerate() {
        let start = if i == 0 { mark.offset } else { 0 };
        for_each_line_from(file, start, |_, bytes, _| reader.add_line(bytes))?;
    }
    Ok(reader.finish())
}

/// The past actions of the trail at `path` at or after `since`, one per intent or dry-run
/// entry, in trail order (what [`history`] is made of; for tests and inspection).
pub fn past_actions(path: &Path, since: SystemTime) -> Result<Vec<PastAction>, AuditError> {
    Ok(read_into(path, since, Ordered::default())?.0.into_actions())
}

/// Read the files that can hold actions at or after `since` into `sink`; returns it and
/// where the reading stopped.
fn read_into<S: Sink>(
    path: &Path,
    since: SystemTime,
    sink: S,
) -> Result<(S, Option<TrailMark>), AuditError> {
    let files = match trail_files(path) {
        Ok(f) => f,
        Err(AuditError::NotFound { .. }) => return Ok((sink, None)),
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
    let mut mark = None;
    for file in &chosen {
        let (inode, offset) = for_each_line_from(file, 0, |_, bytes, _| reader.add_line(bytes))?;
        mark = Some(TrailMark { inode, offset });
    }
    Ok((reader.finish(), mark))
}

/// Where the reader puts each past action once its outcome is known.
trait Sink {
    fn push(&mut self, key: AnswerKey, action: PastAction);

    /// Whether the owner of `rule`'s actions is asked about (escalation follows it).
    fn keeps_owner(&self, _rule: &str) -> bool {
        true
    }
}

impl Sink for History {
    fn push(&mut self, _: AnswerKey, action: PastAction) {
        self.add(action);
    }

    fn keeps_owner(&self, rule: &str) -> bool {
        self.keeps_steps_of(rule)
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
    /// Single intents not answered yet (an outcome comes after its intent).
    pending: HashMap<AnswerKey, PastAction>,
    /// Batch intents not answered yet, by seq: a few words per socket (a mass cleanup's
    /// 100,000 intents all wait for their outcomes, written after the destroys).
    pending_batches: HashMap<u64, PendingBatch>,
    /// Rule names, each allocated once (a mass cleanup's batch names one rule 4,096 times).
    rules: HashMap<String, u32>,
    rule_names: Vec<Arc<str>>,
}

/// An unanswered batch intent.
struct PendingBatch {
    time: SystemTime,
    action: ActionKind,
    /// By entry; `None` once answered.
    entries: Vec<Option<PendingEntry>>,
    /// The owners of the entries whose rule escalation follows (by entry).
    owners: HashMap<u32, OwnerKey>,
}

/// One socket of an unanswered batch intent.
#[derive(Clone, Copy)]
struct PendingEntry {
    /// Index into [`Reader::rule_names`].
    rule: u32,
    escalated: bool,
    cookie: u64,
}

/// One socket of a batch intent as the reader takes it.
struct BatchSocket<'a> {
    rule: &'a str,
    escalated: bool,
    cookie: u64,
    /// The first owner's unit, else that owner (as for a single record).
    owner: Option<OwnerKey>,
}

impl<S: Sink> Reader<S> {
    fn new(since: SystemTime, sink: S) -> Reader<S> {
        Reader {
            since,
            sink,
            pending: HashMap::new(),
            pending_batches: HashMap::new(),
            rules: HashMap::new(),
            rule_names: Vec::new(),
        }
    }

    fn rule_index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.rules.get(name) {
            return i;
        }
        let i = u32::try_from(self.rule_names.len()).unwrap_or(u32::MAX);
        self.rule_names.push(Arc::from(name));
        self.rules.insert(name.to_string(), i);
        i
    }

    fn rule(&mut self, name: &str) -> Arc<str> {
        let i = self.rule_index(name);
        Arc::clone(&self.rule_names[i as usize])
    }

    /// One line of the trail. Unreadable lines (a torn tail) are not history; `audit
    /// verify` reports them. A batch is read as the few fields the history needs (its
    /// sockets' addresses, owners' command lines and explanations are skipped, not
    /// copied); any other record whole.
    fn add_line(&mut self, bytes: &[u8]) -> ControlFlow<()> {
        match serde_json::from_slice::<BatchView>(bytes) {
            Ok(view) if view.batch.is_some() => self.add_batch_view(view),
            Ok(_) => {
                if let Ok(record) = serde_json::from_slice::<AuditRecord>(bytes) {
                    self.add(record);
                }
            }
            Err(_) => {}
        }
        ControlFlow::Continue(())
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

    /// A batch record read whole.
    fn add_batch(&mut self, record: AuditRecord) {
        let Some(batch) = &record.batch else {
            return;
        };
        let action = record.action.as_ref().map(|a| a.kind);
        let sockets = batch.targets.iter().map(|t| {
            let owners = t.owners.iter().filter_map(|&(p, _)| batch.processes.get(p));
            BatchSocket {
                rule: &t.rule,
                escalated: t.escalated,
                cookie: t.cookie,
                owner: first_owner(owners.map(|p| (p.pid, p.start_time, p.unit.as_deref()))),
            }
        });
        let results = batch.results.iter().map(|o| o.result.name());
        self.add_batch_parts(
            record.kind,
            record.seq,
            record.timestamp(),
            action,
            record.intent_seq,
            sockets,
            results,
        );
    }

    /// A batch record read as [`BatchView`].
    fn add_batch_view(&mut self, view: BatchView<'_>) {
        let Some(batch) = &view.batch else {
            return;
        };
        let shared_rule = batch.shared.as_ref().and_then(|s| s.rule.as_deref());
        let sockets = batch.targets.iter().map(|t| {
            let owners = t.owners.iter().filter_map(|&(p, _)| batch.processes.get(p));
            BatchSocket {
                rule: t.rule.as_deref().or(shared_rule).unwrap_or_default(),
                escalated: t.escalated,
                cookie: t.cookie,
                owner: first_owner(owners.map(|p| (p.pid, p.start_time, p.unit.as_deref()))),
            }
        });
        // An index past `outcomes` is no result known: the entry stays unanswered.
        let results = batch.results.iter().map(|r| match r {
            ResultRef::Whole(o) => &*o.result,
            ResultRef::Index(n) => batch.outcomes.get(*n).map_or("", |o| &*o.result),
        });
        self.add_batch_parts(
            view.kind,
            view.seq,
            humantime::parse_rfc3339_weak(&view.time).ok(),
            view.action.map(|a| a.kind),
            view.intent_seq,
            sockets,
            results,
        );
    }

    /// A batch, entry by entry, as [`AuditRecord::entries`] would give them, without making
    /// a record of each: a mass cleanup's batches hold 4,096 sockets each. An intent's
    /// entries wait for their outcomes as [`PendingEntry`]s.
    #[allow(clippy::too_many_arguments)]
    fn add_batch_parts<'s, 'r>(
        &mut self,
        kind: RecordKind,
        seq: u64,
        time: Option<SystemTime>,
        action: Option<ActionKind>,
        intent_seq: Option<u64>,
        sockets: impl Iterator<Item = BatchSocket<'s>>,
        results: impl Iterator<Item = &'r str>,
    ) {
        match kind {
            RecordKind::Intent | RecordKind::DryRun => {
                let Some(time) = time.filter(|t| *t >= self.since) else {
                    return;
                };
                let Some(action) = action else {
                    return;
                };
                let mut pending = PendingBatch {
                    time,
                    action,
                    entries: Vec::with_capacity(sockets.size_hint().0),
                    owners: HashMap::new(),
                };
                for (i, socket) in sockets.enumerate() {
                    let entry = PendingEntry {
                        rule: self.rule_index(socket.rule),
                        escalated: socket.escalated,
                        cookie: socket.cookie,
                    };
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    if kind == RecordKind::DryRun {
                        let mut past = self.past_of(&pending, entry, socket.owner);
                        past.outcome = PastOutcome::DryRun;
                        self.sink.push((seq, Some(i)), past);
                        continue;
                    }
                    if let Some(owner) = socket.owner.filter(|_| self.sink.keeps_owner(socket.rule))
                    {
                        pending.owners.insert(i, owner);
                    }
                    pending.entries.push(Some(entry));
                }
                if kind == RecordKind::Intent {
                    self.pending_batches.insert(seq, pending);
                }
            }
            RecordKind::Outcome => {
                let Some(intent) = intent_seq else {
                    return;
                };
                let Some(mut pending) = self.pending_batches.remove(&intent) else {
                    return;
                };
                for (i, result) in results.enumerate() {
                    let Some(entry) = pending.entries.get_mut(i).and_then(Option::take) else {
                        continue;
                    };
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    let owner = pending.owners.remove(&i);
                    let mut past = self.past_of(&pending, entry, owner);
                    past.outcome = past_outcome(Some(result));
                    self.sink.push((intent, Some(i)), past);
                }
                // Entries the outcome does not answer stay pending.
                if pending.entries.iter().any(Option::is_some) {
                    self.pending_batches.insert(intent, pending);
                }
            }
            RecordKind::Note => {}
        }
    }

    /// The past action of one socket of a batch intent.
    fn past_of(
        &self,
        batch: &PendingBatch,
        entry: PendingEntry,
        owner: Option<OwnerKey>,
    ) -> PastAction {
        PastAction {
            time: batch.time,
            rule: Arc::clone(&self.rule_names[entry.rule as usize]),
            action: batch.action,
            escalated: entry.escalated,
            target: TargetKey::Socket(Cookie(entry.cookie)),
            owner,
            outcome: PastOutcome::Unknown,
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
        for (key, action) in std::mem::take(&mut self.pending) {
            self.sink.push(key, action);
        }
        for (seq, mut batch) in std::mem::take(&mut self.pending_batches) {
            for (i, entry) in batch.entries.iter().enumerate() {
                if let Some(entry) = entry {
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    let owner = batch.owners.remove(&i);
                    let past = self.past_of(&batch, *entry, owner);
                    self.sink.push((seq, Some(i)), past);
                }
            }
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

/// The owner a batch socket's action was about: its first owner's unit, else that owner
/// (`owners`: pid, start time, unit).
fn first_owner<'a>(
    mut owners: impl Iterator<Item = (i32, u64, Option<&'a str>)> + Clone,
) -> Option<OwnerKey> {
    match owners.clone().find_map(|(_, _, unit)| unit) {
        Some(unit) => Some(OwnerKey::Unit(unit.to_string())),
        None => owners
            .next()
            .map(|(pid, start_time, _)| OwnerKey::Process(process_id(pid, start_time))),
    }
}

/// What the history needs of a batch record, borrowed from its line; serde skips the rest
/// (each socket's address, explanation, owners' command lines) without copying it.
#[derive(serde::Deserialize)]
struct BatchView<'a> {
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    kind: RecordKind,
    #[serde(default)]
    action: Option<ActionView>,
    #[serde(default)]
    intent_seq: Option<u64>,
    #[serde(default, borrow)]
    batch: Option<BatchBodyView<'a>>,
}

#[derive(serde::Deserialize)]
struct ActionView {
    kind: ActionKind,
}

#[derive(serde::Deserialize)]
struct BatchBodyView<'a> {
    #[serde(default, borrow)]
    processes: Vec<ProcessView<'a>>,
    /// What every target shares (see `batch_wire`): here, the rule.
    #[serde(default, borrow)]
    shared: Option<SharedView<'a>>,
    #[serde(default, borrow)]
    targets: Vec<TargetView<'a>>,
    /// Each distinct outcome once (see `batch_wire`), which `results` index.
    #[serde(default, borrow)]
    outcomes: Vec<ResultView<'a>>,
    #[serde(default, borrow)]
    results: Vec<ResultRef<'a>>,
}

/// An outcome batch's result: an index into its `outcomes`, or whole (written before
/// `outcomes`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ResultRef<'a> {
    Index(usize),
    Whole(#[serde(borrow)] ResultView<'a>),
}

#[derive(serde::Deserialize)]
struct ProcessView<'a> {
    pid: i32,
    start_time: u64,
    #[serde(default, borrow)]
    unit: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct SharedView<'a> {
    #[serde(default, borrow)]
    rule: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct TargetView<'a> {
    /// Absent when the batch's `shared` holds it.
    #[serde(default, borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(default)]
    escalated: bool,
    cookie: u64,
    #[serde(default)]
    owners: Vec<(usize, i32)>,
}

#[derive(serde::Deserialize)]
struct ResultView<'a> {
    #[serde(borrow)]
    result: Cow<'a, str>,
}
