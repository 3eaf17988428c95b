//! The audit trail: append-only, hash-chained JSON Lines with an intent before and an outcome after every action.
//! Writing ([`AuditLog`]), reading ([`read_trail`]), checking ([`verify`]) and questions
//! asked of it ([`Filter`], [`summarize`], [`history`]).
//!
//! # Format
//!
//! One record per line (UTF-8 JSON, `\n`-terminated), in the live file (default
//! `/var/lib/sockwarden/audit.jsonl`, mode 0640) and its rotated predecessors. Absent
//! optional fields are omitted. Readers must ignore fields they do not know.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `seq` | u64 | 1 for the first record of the trail, +1 per record, across rotated files |
//! | `time` | string | RFC 3339 UTC with milliseconds, `2026-11-23T14:05:09.123Z` |
//! | `host` | string | hostname of the writer |
//! | `kind` | string | `intent` (written and fsynced before acting), `outcome`, `dry-run`, `note` |
//! | `actor` | object | `kind` (`daemon`\|`cli`), `uid`, `user`?, `pid`, `sudo_user`? |
//! | `mode` | string | `observe` or `enforce` |
//! | `rule`? | string | the policy rule that fired |
//! | `policy_digest`? | string | digest of the policy set in force |
//! | `action`? | object | `kind` (`log`\|`destroy`\|`signal`\|`restart`\|`exec`), `signal`?, `unit`?, `command`? |
//! | `escalated`? | bool | `true` when the action is its rule's `[rule.escalate]` step; omitted when false |
//! | `target`? | object | the socket, as one line of `scan --json` (owners, `age_secs`, `age_source`) |
//! | `unit`? | string | a unit target (restart) |
//! | `process`? | object | a process target: `pid`, `start_time`, `comm`, `cmdline`?, `unit`? |
//! | `why`? | string | why the action was chosen, in words |
//! | `intent_seq`? | u64 | outcomes: the seq of their intent |
//! | `outcome`? | object | outcomes: `result` (destroyed, already-gone, tuple-reused, unsupported, not-permitted, delivered, pid-reused, restarted, failed, skipped, …), `errno`?, `message`? |
//! | `note`? | object | notes: `event` (`start`\|`shutdown`\|`reload`\|`reload-failed`\|`repair`), `detail`?, `torn`? |
//! | `prev` | string | sha256 hex of the previous record's line (its bytes without the newline); 64 zeros for the first record of the trail |
//! | `hash` | string | always the last field: sha256 hex of this line with its `,"hash":"…"` suffix removed and `}` put back |
//!
//! `prev` chains every record to the one before (any change to a record breaks the next
//! one's `prev`); `hash` seals each record on its own, so a change to the last record, which
//! no later record vouches for, is caught too. `audit verify` checks both. Anyone who can
//! rewrite the file can rewrite the whole chain: keep the head hash that `audit verify`
//! prints somewhere else (a ticket, the journal) to anchor it.
//!
//! Writers take an exclusive `flock` on the live file for each append, read its tail, and
//! write each record with one `write(2)` followed by `fdatasync`; a batch
//! ([`AuditLog::append_batch`], used for mass destroys) is written the same way as a whole,
//! with one `fdatasync`, and on failure is truncated away entirely. When the live file passes
//! the rotation size (64 MiB by default) it is renamed to `audit.jsonl.<first seq, 20
//! digits>` and the chain continues in a new live file.
//!
//! A crash mid-write can leave a final line without its newline (a *torn* line). `verify`
//! reports it and is otherwise satisfied. The next writer repairs it: a complete record that
//! only lacks its newline gets it back; anything else is copied byte for byte to
//! `audit.jsonl.torn-<offset>-<sha256 prefix>`, truncated away, and described in a `note`
//! record (`event: repair`) whose `torn` object carries `offset`, `len`, `sha256`, the
//! bytes as `text` and `saved_to`. A damaged last *complete* line is never repaired: the
//! writer refuses to extend a chain that does not verify (no action is taken).

mod anchor;
mod batch;
mod batch_wire;
mod error;
mod history;
mod prune;
mod query;
mod read;
mod record;
mod verify;
mod writer;

/// Where the trail lives unless `--audit-log` (or `SOCKWARDEN_AUDIT_LOG`) says otherwise.
pub const DEFAULT_AUDIT_LOG: &str = "/var/lib/sockwarden/audit.jsonl";

pub use anchor::{anchor_name, checkpoint_name, Anchor, AuditKey, Checkpoint};
pub use batch::{Batch, BatchProcess, BatchTarget, Entry as BatchEntry};
pub use error::AuditError;
pub use history::{
    catch_up, history, history_from, history_marked, past_actions, past_actions_from, past_outcome,
    MarkedHistory, TrailMark, HISTORY_LOOKBACK,
};
pub use prune::{prune, PruneReport};
pub use query::{
    outcome_results, parse_when, result_of, summarize, AnswerKey, Filter, HourCount, Summary, Tally,
};
pub use read::{joined, read_trail, rotated_files, rotated_name, trail_files, SkippedLine, Trail};
pub use record::{
    line_hash, open_line, open_line_with, seal, seal_with, sha256_hex, Action, ActionKind, Actor,
    ActorKind, AuditRecord, LineError, Mode, NewRecord, Note, NoteEvent, Outcome, ProcessRecord,
    RecordKind, StartPoint, TornBytes, GENESIS_PREV,
};
pub use verify::{
    verify, verify_with, BadRecord, TornTail, VerifyFailure, VerifyOptions, VerifyReport,
};
pub use writer::{AuditLog, DEFAULT_MAX_SIZE};

#[cfg(test)]
mod tests;
