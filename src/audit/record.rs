//! One audit record: the serialized line format, how a line is sealed with its own hash
//! and chained to the previous one, and what callers fill in ([`NewRecord`]).

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::anchor::AuditKey;
use super::batch::Batch;
use crate::outcome::ActionResult;
use crate::record::SocketRecord;

/// The global mode the actor ran in (`observe`, `enforce`) and the kind of an action
/// (`log`, `destroy`, …): the policy's own types, with the same JSON names.
pub use crate::policy::{ActionKind, Mode};

/// `prev` of the very first record of a trail.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why the record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// Written and fsynced before acting; no action without it.
    Intent,
    /// What happened, written after acting; `intent_seq` names its intent.
    Outcome,
    /// What would have been done (`clean --dry-run`, observe mode).
    DryRun,
    /// Agent life cycle and log maintenance: start, shutdown, reload, repair.
    Note,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Intent => "intent",
            RecordKind::Outcome => "outcome",
            RecordKind::DryRun => "dry-run",
            RecordKind::Note => "note",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActorKind {
    Daemon,
    Cli,
}

/// Who wrote the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub uid: u32,
    /// The user name of `uid`, when the passwd database knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub pid: i32,
    /// `SUDO_USER` when the CLI was run through sudo: the person behind uid 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
}

impl Actor {
    /// This process, as a daemon or a CLI actor.
    pub fn current(kind: ActorKind) -> Actor {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name);
        Actor {
            kind,
            uid: uid.as_raw(),
            user,
            pid: crate::model::Pid::own().0,
            sudo_user: std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()),
        }
    }
}

/// What was (or would be) done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    /// For `signal`: the signal name, e.g. `SIGHUP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// For `restart`: the unit restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// For `exec`: the command and its arguments (never run through a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

impl Action {
    pub fn new(kind: ActionKind) -> Action {
        Action {
            kind,
            signal: None,
            unit: None,
            command: None,
        }
    }
}

/// A process target when the action is aimed at a process rather than a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    /// Clock ticks since boot: with `pid`, the process identity.
    pub start_time: u64,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// What happened, in an `outcome` record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outcome {
    /// destroyed, already-gone, tuple-reused, unsupported, not-permitted, delivered,
    /// pid-reused, restarted, failed, skipped, … (see [`ActionResult`]).
    pub result: ActionResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Most often the same words for every socket of a mass destroy, which are then not
    /// copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<std::borrow::Cow<'static, str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteEvent {
    Start,
    Shutdown,
    Reload,
    ReloadFailed,
    /// The writer found a torn final line (a crash mid-write) and moved it out of the way.
    Repair,
    /// `audit prune` removed old rotated files; `checkpoint` says where the trail starts now.
    Prune,
    /// A writer found records but no anchor file (first write after an upgrade, or the
    /// anchor was deleted) and wrote a new one: cuts from the end before this are not
    /// detectable by the anchor.
    Anchor,
}

/// The bytes of a torn final line that a writer removed, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornBytes {
    /// The file and byte offset the torn line started at.
    pub file: String,
    pub offset: u64,
    pub len: u64,
    /// sha256 hex of the exact torn bytes.
    pub sha256: String,
    /// The torn bytes as text (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
    /// Where the exact bytes were saved before they were truncated away.
    pub saved_to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub event: NoteEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<TornBytes>,
    /// `prune` notes: the first record that was kept (its seq and prev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<StartPoint>,
}

/// Where a trail starts after old files were pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartPoint {
    pub seq: u64,
    pub prev: String,
}

/// One line of the audit trail. Field names are a stable interface: add fields, never
/// rename or remove them. See the module documentation of [`crate::audit`] for the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds: `2026-11-23T14:05:09.123Z`.
    pub time: String,
    pub host: String,
    pub kind: RecordKind,
    pub actor: Actor,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// True when the action is its rule's `[rule.escalate]` step; omitted when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub escalated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<SocketRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Note>,
    /// Many sockets in one record (see [`super::batch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    /// In an expanded view only (never on disk): which entry of a batch record this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u32>,
    /// Keyed mode: the id of the key whose HMAC is this record's `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// sha256 hex of the previous record's line (without its newline).
    pub prev: String,
    /// sha256 hex of this line up to the `,"hash":` suffix, closed with `}`. Always last.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl AuditRecord {
    /// The record as readers see it: a batch record becomes one entry per socket (its
    /// `entry` set, `target` or `outcome` filled in, `batch` gone); any other record is
    /// itself.
    pub fn entries(self) -> Vec<AuditRecord> {
        let Some(batch) = self.batch.clone() else {
            return vec![self];
        };
        let bare = AuditRecord {
            batch: None,
            ..self
        };
        if !batch.targets.is_empty() {
            (0..batch.targets.len())
                .map(|i| {
                    let t = &batch.targets[i];
                    AuditRecord {
                        rule: Some(t.rule.clone()),
                        escalated: t.escalated,
                        why: Some(t.why.clone()),
                        target: batch.socket(i),
                        entry: u32::try_from(i).ok(),
                        ..bare.clone()
                    }
                })
                .collect()
        } else {
            batch
                .results
                .into_iter()
                .enumerate()
                .map(|(i, outcome)| AuditRecord {
                    outcome: Some(outcome),
                    entry: u32::try_from(i).ok(),
                    ..bare.clone()
                })
                .collect()
        }
    }

    /// The key an outcome answers, and an intent is answered by: (intent seq, entry).
    pub fn answer_key(&self) -> Option<(u64, Option<u32>)> {
        match self.kind {
            RecordKind::Outcome => self.intent_seq.map(|s| (s, self.entry)),
            _ => Some((self.seq, self.entry)),
        }
    }

    /// The record's time, when `time` parses.
    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.time).ok()
    }

    /// Every systemd unit this record is about: the action's unit, the record's unit, the
    /// process's unit and the target's owners' units.
    pub fn units(&self) -> Vec<&str> {
        let owners = self
            .target
            .iter()
            .flat_map(|t| t.owners.iter().map(|o| o.unit.as_deref()));
        let all = [
            self.action.as_ref().and_then(|a| a.unit.as_deref()),
            self.unit.as_deref(),
            self.process.as_ref().and_then(|p| p.unit.as_deref()),
        ];
        let mut units: Vec<&str> = Vec::new();
        for u in all.into_iter().chain(owners).flatten() {
            if !units.contains(&u) {
                units.push(u);
            }
        }
        units
    }

    /// Every process command name (`comm`) this record is about.
    pub fn comms(&self) -> Vec<&str> {
        let mut comms: Vec<&str> = Vec::new();
        if let Some(p) = &self.process {
            comms.push(&p.comm);
        }
        if let Some(t) = &self.target {
            for o in &t.owners {
                if !comms.contains(&o.comm.as_str()) {
                    comms.push(&o.comm);
                }
            }
        }
        comms
    }
}

/// What a caller fills in; the writer adds `seq`, `time`, `host`, `prev` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub kind: RecordKind,
    pub actor: Actor,
    pub mode: Mode,
    pub rule: Option<String>,
    pub policy_digest: Option<String>,
    pub action: Option<Action>,
    pub escalated: bool,
    pub target: Option<SocketRecord>,
    pub unit: Option<String>,
    pub process: Option<ProcessRecord>,
    pub why: Option<String>,
    pub intent_seq: Option<u64>,
    pub outcome: Option<Outcome>,
    pub note: Option<Note>,
    pub batch: Option<Batch>,
}

impl NewRecord {
    fn bare(kind: RecordKind, actor: Actor, mode: Mode) -> NewRecord {
        NewRecord {
            kind,
            actor,
            mode,
            rule: None,
            policy_digest: None,
            action: None,
            escalated: false,
            target: None,
            unit: None,
            process: None,
            why: None,
            intent_seq: None,
            outcome: None,
            note: None,
            batch: None,
        }
    }

    /// An intent: written (and fsynced) before acting. Add the target with
    /// [`NewRecord::target`], [`NewRecord::unit`] or [`NewRecord::process`].
    pub fn intent(actor: Actor, mode: Mode, action: Action, why: impl Into<String>) -> NewRecord {
        NewRecord {
            action: Some(action),
            why: Some(why.into()),
            ..NewRecord::bare(RecordKind::Intent, actor, mode)
        }
    }

    /// A dry-run record: what would have been done.
    pub fn dry_run(actor: Actor, mode: Mode, action: Action, why: impl Into<String>) -> NewRecord {
        NewRecord {
            action: Some(action),
            why: Some(why.into()),
            ..NewRecord::bare(RecordKind::DryRun, actor, mode)
        }
    }

    /// The outcome of `intent`: its seq and the result, nothing repeated (readers join the
    /// outcome to its intent).
    pub fn outcome_of(intent: &AuditRecord, actor: Actor, outcome: Outcome) -> NewRecord {
        NewRecord {
            intent_seq: Some(intent.seq),
            outcome: Some(outcome),
            ..NewRecord::bare(RecordKind::Outcome, actor, intent.mode)
        }
    }

    /// The outcome of the single intent `intent_seq`.
    pub fn outcome_for(intent_seq: u64, mode: Mode, actor: Actor, outcome: Outcome) -> NewRecord {
        NewRecord {
            intent_seq: Some(intent_seq),
            outcome: Some(outcome),
            ..NewRecord::bare(RecordKind::Outcome, actor, mode)
        }
    }

    /// Intents (or, with `kind` dry-run, would-be actions) for many sockets of one action:
    /// one record (see [`super::batch`]).
    pub fn batch(
        kind: RecordKind,
        actor: Actor,
        mode: Mode,
        action: Action,
        policy_digest: impl Into<String>,
        batch: Batch,
    ) -> NewRecord {
        NewRecord {
            action: Some(action),
            policy_digest: Some(policy_digest.into()),
            batch: Some(batch),
            ..NewRecord::bare(kind, actor, mode)
        }
    }

    /// The outcomes of the batch intent `intent_seq`, one per target in its order.
    pub fn outcomes_of(
        intent_seq: u64,
        mode: Mode,
        actor: Actor,
        results: Vec<Outcome>,
    ) -> NewRecord {
        NewRecord {
            intent_seq: Some(intent_seq),
            batch: Some(Batch::results(results)),
            ..NewRecord::bare(RecordKind::Outcome, actor, mode)
        }
    }

    /// A life-cycle note.
    pub fn note(
        actor: Actor,
        mode: Mode,
        event: NoteEvent,
        detail: impl Into<String>,
    ) -> NewRecord {
        NewRecord {
            note: Some(Note {
                event,
                detail: Some(detail.into()),
                torn: None,
                checkpoint: None,
            }),
            ..NewRecord::bare(RecordKind::Note, actor, mode)
        }
    }

    pub fn rule(mut self, rule: impl Into<String>, policy_digest: impl Into<String>) -> NewRecord {
        self.rule = Some(rule.into());
        self.policy_digest = Some(policy_digest.into());
        self
    }

    /// Mark the action as its rule's `[rule.escalate]` step.
    pub fn escalated(mut self, escalated: bool) -> NewRecord {
        self.escalated = escalated;
        self
    }

    pub fn target(mut self, target: SocketRecord) -> NewRecord {
        self.target = Some(target);
        self
    }

    pub fn unit(mut self, unit: impl Into<String>) -> NewRecord {
        self.unit = Some(unit.into());
        self
    }

    pub fn process(mut self, process: ProcessRecord) -> NewRecord {
        self.process = Some(process);
        self
    }

    /// The full record, without `hash` (the writer seals it with [`seal`]).
    pub fn into_record(
        self,
        seq: u64,
        time: SystemTime,
        host: String,
        prev: String,
    ) -> AuditRecord {
        AuditRecord {
            seq,
            time: humantime::format_rfc3339_millis(time).to_string(),
            host,
            kind: self.kind,
            actor: self.actor,
            mode: self.mode,
            rule: self.rule,
            policy_digest: self.policy_digest,
            action: self.action,
            escalated: self.escalated,
            target: self.target,
            unit: self.unit,
            process: self.process,
            why: self.why,
            intent_seq: self.intent_seq,
            outcome: self.outcome,
            note: self.note,
            batch: self.batch,
            entry: None,
            key_id: None,
            prev,
            hash: String::new(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The hash the next record's `prev` must carry: sha256 of this line without its newline.
pub fn line_hash(line: &[u8]) -> String {
    sha256_hex(line)
}

/// [`seal_with`] without a key: the seal is a plain sha256.
pub fn seal(record: &mut AuditRecord) -> Result<Vec<u8>, serde_json::Error> {
    seal_with(record, None)
}

/// Serialize `record` into its line (without the newline), filling `record.hash`.
///
/// The record is serialized without `hash` into `{…}`; `hash` is sha256 of those bytes —
/// or, with a key, their HMAC-SHA256 (and `key_id` names the key inside the sealed bytes,
/// so a keyed record cannot be passed off as an unkeyed one); the line is those bytes with
/// the closing `}` replaced by `,"hash":"<hex>"}`.
pub fn seal_with(
    record: &mut AuditRecord,
    key: Option<&AuditKey>,
) -> Result<Vec<u8>, serde_json::Error> {
    seal_line(record, key).map(|(line, _)| line)
}

/// [`seal_with`], and the line's own hash ([`line_hash`], what the next record's `prev`
/// carries) taken in the same pass over the bytes: a mass cleanup's intents are 45 MB.
pub fn seal_line(
    record: &mut AuditRecord,
    key: Option<&AuditKey>,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    record.hash.clear();
    record.key_id = key.map(|k| k.id().to_string());
    let mut body = serde_json::to_vec(&*record)?;
    // `body` is an object: everything but its closing brace is shared by the sealed bytes
    // and the line.
    let open = body.len().saturating_sub(1);
    let mut shared = Sha256::new();
    shared.update(&body[..open]);
    let hash = match key {
        Some(k) => k.mac_hex(&body),
        None => {
            let mut sealed = shared.clone();
            sealed.update(&body[open..]);
            hex(&sealed.finalize())
        }
    };
    body.truncate(open);
    let suffix_from = body.len();
    body.extend_from_slice(b",\"hash\":\"");
    body.extend_from_slice(hash.as_bytes());
    body.extend_from_slice(b"\"}");
    shared.update(&body[suffix_from..]);
    record.hash = hash;
    Ok((body, hex(&shared.finalize())))
}

/// Why a line is not a sound record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not valid JSON for an audit record; `eof` when the line is a cut-off prefix.
    Parse { message: String, eof: bool },
    /// The line does not end with its own `,"hash":"<hex>"}`.
    NoSeal,
    /// The line's content does not match its own hash.
    BadSeal,
    /// The record is sealed with a key (its id) and no key was given to check it.
    Keyed { key_id: String },
    /// The record is sealed with another key than the one given.
    OtherKey { key_id: String, given: String },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Parse { message, .. } => {
                write!(
                    f,
                    "not a valid audit record ({message}): the line was modified or corrupted"
                )
            }
            LineError::NoSeal => f.write_str(
                "the line does not end with its own hash field: the record was modified",
            ),
            LineError::BadSeal => {
                f.write_str("content does not match its own hash: the record was modified")
            }
            LineError::Keyed { key_id } => write!(
                f,
                "the record is sealed with audit key {key_id}: pass --audit-key (or SOCKWARDEN_AUDIT_KEY) to check it"
            ),
            LineError::OtherKey { key_id, given } => write!(
                f,
                "the record is sealed with audit key {key_id}, not with the given key {given}"
            ),
        }
    }
}

/// [`open_line_with`] without a key: keyed records cannot be checked.
pub fn open_line(line: &[u8]) -> Result<AuditRecord, LineError> {
    open_line_with(line, None)
}

/// Parse one line (without newline) and check its own seal: sha256, or for a keyed record
/// the HMAC under `key`.
pub fn open_line_with(line: &[u8], key: Option<&AuditKey>) -> Result<AuditRecord, LineError> {
    let record: AuditRecord = serde_json::from_slice(line).map_err(|e| LineError::Parse {
        message: e.to_string(),
        eof: e.classify() == serde_json::error::Category::Eof,
    })?;
    // Suffix: ,"hash":"<64 hex>"}  (9 + 64 + 2 bytes)
    const SUFFIX_LEN: usize = 9 + 64 + 2;
    let hash_ok = record.hash.len() == 64
        && record
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hash_ok || line.len() < SUFFIX_LEN {
        return Err(LineError::NoSeal);
    }
    let (body, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let mut expected = Vec::with_capacity(SUFFIX_LEN);
    expected.extend_from_slice(b",\"hash\":\"");
    expected.extend_from_slice(record.hash.as_bytes());
    expected.extend_from_slice(b"\"}");
    if suffix != expected.as_slice() {
        return Err(LineError::NoSeal);
    }
    let mut sealed = body.to_vec();
    sealed.push(b'}');
    let computed = match (&record.key_id, key) {
        (None, _) => sha256_hex(&sealed),
        (Some(id), None) => return Err(LineError::Keyed { key_id: id.clone() }),
        (Some(id), Some(k)) if id != k.id() => {
            return Err(LineError::OtherKey {
                key_id: id.clone(),
                given: k.id().to_string(),
            })
        }
        (Some(_), Some(k)) => k.mac_hex(&sealed),
    };
    if computed != record.hash {
        return Err(LineError::BadSeal);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditRecord {
        let actor = Actor {
            kind: ActorKind::Cli,
            uid: 0,
            user: Some("root".into()),
            pid: 42,
            sudo_user: None,
        };
        NewRecord::intent(
            actor,
            Mode::Enforce,
            Action::new(ActionKind::Destroy),
            "close-wait for 12m",
        )
        .rule("api-leak", "sha256:abc")
        .into_record(1, SystemTime::UNIX_EPOCH, "h1".into(), GENESIS_PREV.into())
    }

    #[test]
    fn seal_then_open_round_trips() {
        let mut r = sample();
        let line = seal(&mut r).expect("serialize");
        assert!(line.ends_with(format!(",\"hash\":\"{}\"}}", r.hash).as_bytes()));
        assert_eq!(open_line(&line).expect("opens"), r);
        let text = String::from_utf8(line).expect("utf8");
        assert!(text.starts_with(
            r#"{"seq":1,"time":"1970-01-01T00:00:00.000Z","host":"h1","kind":"intent","#
        ));
        assert!(
            text.contains(r#""mode":"enforce","rule":"api-leak","policy_digest":"sha256:abc","action":{"kind":"destroy"}"#),
            "mode and action keep their JSON names: {text}"
        );
        assert!(
            !text.contains("\"target\""),
            "absent fields are omitted: {text}"
        );
    }

    #[test]
    fn escalated_is_written_only_when_true_and_read_as_false_when_absent() {
        let mut plain = sample();
        let line = String::from_utf8(seal(&mut plain).expect("serialize")).expect("utf8");
        assert!(!line.contains("escalated"), "{line}");
        assert!(!open_line(line.as_bytes()).expect("opens").escalated);

        let mut r = NewRecord::intent(
            sample().actor,
            Mode::Enforce,
            Action::new(ActionKind::Restart),
            "still leaking 10m after the destroys",
        )
        .escalated(true)
        .into_record(2, SystemTime::UNIX_EPOCH, "h1".into(), GENESIS_PREV.into());
        let line = String::from_utf8(seal(&mut r).expect("serialize")).expect("utf8");
        assert!(
            line.contains(r#""action":{"kind":"restart"},"escalated":true,"#),
            "{line}"
        );
        let back = open_line(line.as_bytes()).expect("opens");
        assert!(back.escalated);
        let outcome = NewRecord::outcome_of(
            &back,
            back.actor.clone(),
            Outcome {
                result: ActionResult::Restarted,
                errno: None,
                message: None,
            },
        );
        // Outcomes carry only the result; readers join them to their intent.
        assert!(!outcome.escalated && outcome.target.is_none() && outcome.rule.is_none());
        let outcome =
            outcome.into_record(3, SystemTime::UNIX_EPOCH, "h1".into(), GENESIS_PREV.into());
        let read = crate::audit::joined(vec![back.clone(), outcome]);
        assert!(
            read[1].escalated,
            "joined, the outcome has its intent's flag"
        );
    }

    #[test]
    fn an_edited_line_is_caught_by_its_seal() {
        let mut r = sample();
        let line = seal(&mut r).expect("serialize");
        let edited = String::from_utf8(line).expect("utf8").replace("12m", "13m");
        assert_eq!(open_line(edited.as_bytes()), Err(LineError::BadSeal));
        let cut = &edited.as_bytes()[..40];
        assert!(matches!(
            open_line(cut),
            Err(LineError::Parse { eof: true, .. })
        ));
    }
}
